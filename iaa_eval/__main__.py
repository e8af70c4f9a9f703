"""`python -m iaa_eval` (also what `torchrun -m iaa_eval` starts)."""

from iaa_eval.cli import main

raise SystemExit(main())

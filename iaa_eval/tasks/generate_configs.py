"""Write the per-subject and group YAMLs of MMLU and C-Eval from iaa_eval.tasks.text_configs.

Run ``python -m iaa_eval.tasks.generate_configs`` after changing the subject tables or the
naming; the templates (``_<formulation>_template_yaml``) are written by hand. A test fails when
the files and the generator disagree.
"""

from __future__ import annotations

import yaml

from iaa_eval.tasks.text_configs import BENCHMARKS, FORMULATIONS, group_config, subject_fields


def main() -> None:
    """Rewrite every generated YAML under iaa_eval/data/tasks/mmlu and .../ceval."""
    for bench in BENCHMARKS.values():
        for old in bench.folder.glob("*.yaml"):
            old.unlink()
        for formulation in FORMULATIONS:
            for subject in bench.hub_subjects:
                fields = subject_fields(bench, subject, formulation)
                text = yaml.safe_dump(fields, allow_unicode=True, sort_keys=True, width=1000)
                (bench.folder / f"{fields['task']}.yaml").write_text(text, encoding="utf-8")
            group = group_config(bench, formulation)
            text = yaml.safe_dump(group, allow_unicode=True, sort_keys=False, width=1000)
            (bench.folder / f"_{group['group']}.yaml").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()

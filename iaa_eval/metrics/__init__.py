"""Pure metric functions: lists or arrays in, floats or small dataclasses out. No torch here."""

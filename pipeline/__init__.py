"""LLM + domain-model recommendation pipeline (BDLM and auxiliary-task alignment)."""

"""The LLM side: base models, vocabulary expansion, prompts, SFT and LLM scoring."""

"""Plans presets: JSON files of LLM spec options for ``nnunetv2-llm plan --preset NAME`` (NAME is the file stem)."""

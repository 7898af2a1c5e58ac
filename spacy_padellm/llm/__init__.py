"""PaDeLLM as a spacy-llm task (``task``) with a local backend (``local``) and an OpenAI-compatible completions
backend (``openai``), registered in ``models``."""

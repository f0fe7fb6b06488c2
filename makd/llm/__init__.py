"""Stage 1: prompts, OpenAI-compatible chat with retries and a reply cache, reply parsing, screening and
the two-step (generate N, select Q) question pipeline behind tools/make_questions.py."""

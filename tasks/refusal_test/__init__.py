"""HalluLens' nonsense-mixed-entities refusal test (arXiv 2504.17550), offline half.

- `entities`: the made-up names and the prompt rows ({prompt, name, type}), HalluLens' CSV.
- `judges`: the LLM judge (HalluLens' prompts, any OpenAI-compatible endpoint), the offline
  rule judge, `evaluate` and HalluLens' eval_results.json / raw_eval_res.jsonl; the factual
  control set's judge.
- `prompts`: HalluLens' question templates and judge prompts, verbatim.
- `data/`: the real names the generator mixes, and the factual control set (data/README.md).
"""

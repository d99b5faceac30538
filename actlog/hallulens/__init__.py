"""HalluLens' nonsense-mixed-entities refusal test (arXiv 2504.17550), offline half.

- `entities`: the made-up names and the prompt rows ({prompt, name, type}), HalluLens' CSV.
- `judges`: the LLM judge (HalluLens' prompts, any OpenAI-compatible endpoint), the offline
  rule judge, `evaluate` and HalluLens' eval_results.json / raw_eval_res.jsonl; the factual
  control set's judge.
- `prompts`: HalluLens' question templates and judge prompts, verbatim.
- `data/`: the real names the generator mixes, and the factual control set (data/README.md).

`nonsense_mixed_entities` runs it through the stack (`actlog hallulens`, or HalluLens' own
`python tasks/refusal_test/nonsense_mixed_entities.py` from a checkout).
"""

from actlog._exports import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "generate_prompts": "entities",
        "load_prompt_csv": "entities",
        "save_prompt_csv": "entities",
        "RuleJudge": "judges",
        "LLMJudge": "judges",
        "make_judge": "judges",
        "evaluate": "judges",
        "write_eval_outputs": "judges",
        "main": "nonsense_mixed_entities",
    },
)

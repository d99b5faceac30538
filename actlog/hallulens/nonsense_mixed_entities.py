"""HalluLens' nonsense mixed entities refusal test, through the activation-logging stack.

    python tasks/refusal_test/nonsense_mixed_entities.py --do_generate_prompt --do_inference \\
        --do_eval --N 50 --seed 1 --exp nonsense_all
    actlog hallulens --do_generate_prompt --do_inference --do_eval --N 50   # the same

The same flags and outputs as HalluLens' script (facebookresearch/HalluLens,
tasks/refusal_test/nonsense_mixed_entities.py): the prompts (made offline from the shipped
name lists), `generation.jsonl`, `raw_eval_res.jsonl` and `eval_results.json` under
`output_base_dir/<exp>_<seed>_<N>/<model>/`. Inference goes through the gateway (`--server`)
with capture on, so every answer's activations are stored; the evaluation then labels each
answer's record, found by the record id the gateway returned for it. A factual control set
(real entities in the same templates, judged by a known answer) runs beside it, so that
records of both classes exist even on a model that never refuses.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from actlog.hallulens.entities import (
    EXPERIMENTS,
    generate_prompts,
    load_prompt_csv,
    save_prompt_csv,
    task_name,
)
from actlog.hallulens.judges import (
    DEFAULT_JUDGE_MODEL,
    RuleJudge,
    evaluate,
    judge_factual,
    load_factual,
    make_judge,
    write_eval_outputs,
)
from actlog.hallulens.stack_inference import (
    answer_labels,
    chat_client,
    generate,
    label_records,
    matching_model,
    parse_capture_layers,
    read_jsonl,
    served_models,
    write_jsonl,
)
from actlog_common.defaults import GATEWAY_PORT, STORAGE_ADDR, configure_logging

logger = logging.getLogger("nonsense_mixed_entities")
FACTUAL_EXP = "factual_control"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exp", default="nonsense_all", choices=EXPERIMENTS)
    parser.add_argument("--do_generate_prompt", default=False, action="store_true")
    parser.add_argument("--do_inference", default=False, action="store_true")
    parser.add_argument("--do_eval", default=False, action="store_true")
    parser.add_argument("--name_overwrite", default=False, action="store_true")
    parser.add_argument("--infer_overwrite", default=False, action="store_true")
    parser.add_argument("--eval_overwrite", default=False, action="store_true")
    parser.add_argument("--output_base_dir", default="output", help="inference and eval output")
    parser.add_argument("--prompt_output_path", default="",
                        help="where prompts go (default: OUTPUT_BASE_DIR/prompts/EXP)")  # fmt: skip
    parser.add_argument("--tested_model", default="",
                        help="the gateway's model name (default: the one it serves)")  # fmt: skip
    parser.add_argument("--N", type=int, default=2000, help="names per domain")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--server", default=f"http://127.0.0.1:{GATEWAY_PORT}",
                        help="the gateway's base URL")  # fmt: skip
    parser.add_argument(
        "--storage-addr", "--storage", dest="storage_addr", default=STORAGE_ADDR,
        help="storage host:port (labels)",
    )  # fmt: skip
    parser.add_argument("--capture_layers", default="",
                        help="layers to capture: last, all, recommended or e.g. 0,6,12,-1 "
                             "(default: the server's CAPTURE_DEFAULT_LAYERS)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=64, help="requests at once (HalluLens: 64)")
    parser.add_argument("--judge_url", default="",
                        help="OpenAI-compatible judge URL; default: the rule judge")  # fmt: skip
    parser.add_argument("--judge_model", default=DEFAULT_JUDGE_MODEL)
    parser.add_argument("--judge_max_tokens", type=int, default=512, help="HalluLens: 512")
    parser.add_argument("--skip_factual", default=False, action="store_true",
                        help="leave out the factual control set")  # fmt: skip
    parser.add_argument("--factual_samples", type=int, default=0,
                        help="the first K factual questions (default: all)")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        parse_capture_layers(args.capture_layers)
    except ValueError as error:
        parser.error(str(error))
    return args


class Run:
    """One experiment's paths: HalluLens' layout."""

    def __init__(self, args: argparse.Namespace, model: str) -> None:
        self.args = args
        self.model = model
        self.model_name = model.split("/")[-1]
        self.task = task_name(args.exp, args.seed, args.N)
        prompt_dir = Path(
            args.prompt_output_path or Path(args.output_base_dir) / "prompts" / args.exp
        )
        # HalluLens files prompts under the tested model's name; without --tested_model the
        # prompts are made offline, before anyone asks the gateway which model it serves.
        prompt_model = args.tested_model.split("/")[-1] or "served"
        self.prompt_path = prompt_dir / "save" / prompt_model / f"{self.task}.csv"
        self.output_dir = Path(args.output_base_dir) / self.task / self.model_name
        self.generations = self.output_dir / "generation.jsonl"
        self.results = self.output_dir / "eval_results.json"
        self.factual_generations = self.output_dir / "factual_generation.jsonl"
        self.factual_results = self.output_dir / "factual_eval_results.json"


def generate_prompt_file(run: Run) -> None:
    if run.prompt_path.exists() and not run.args.name_overwrite:
        print(f"prompts already made: {run.prompt_path}")
        return
    rows = generate_prompts(run.args.exp, n=run.args.N, seed=run.args.seed)
    save_prompt_csv(rows, run.prompt_path)
    print(f"{len(rows)} prompts -> {run.prompt_path}")


def run_inference(run: Run) -> None:
    if not run.prompt_path.exists():
        generate_prompt_file(run)
    if run.args.infer_overwrite:
        for path in (run.generations, run.results, run.factual_generations, run.factual_results):
            path.unlink(missing_ok=True)
    if run.generations.exists():
        print(f"{run.task} inference already completed: {run.generations}")
    else:
        rows = load_prompt_csv(run.prompt_path)
        answered = generate(rows, run.args.server, run.model, run.args.threads,
                            capture_layers=run.args.capture_layers)  # fmt: skip
        write_jsonl(answered, run.generations)
        print(f"{len(answered)} answers -> {run.generations}")
    if not run.args.skip_factual and not run.factual_generations.exists():
        items = load_factual()
        if run.args.factual_samples > 0:
            items = items[: run.args.factual_samples]
        answered = generate(items, run.args.server, run.model, run.args.threads,
                            desc="factual control through the gateway",
                            capture_layers=run.args.capture_layers)  # fmt: skip
        write_jsonl(answered, run.factual_generations)


def run_eval(run: Run) -> dict[str, Any]:
    if run.results.exists() and not run.args.eval_overwrite:
        print(f"{run.task} evaluation already completed: {run.results}")
        return json.loads(run.results.read_text())
    generations = read_jsonl(run.generations)
    llm_options = {"max_tokens": run.args.judge_max_tokens} if run.args.judge_url else {}
    judge = make_judge(run.args.judge_url or None, run.args.judge_model, **llm_options)
    answers = [g["generation"] for g in generations]
    workers = 50 if run.args.judge_url else 1  # HalluLens judges 50 at a time
    result = evaluate(generations, answers, judge, model=run.model_name, max_workers=workers)
    write_eval_outputs(result, run.output_dir)
    labelled = [
        (g.get("record_id", ""), {
            **answer_labels(g, run.args.exp, judge.name, item.refused,
                            None if item.refused is None else not item.refused),
            "task": run.task,
        })
        for g, item in zip(generations, result.items, strict=True)
    ]  # fmt: skip
    summary = result.to_json()
    summary["labelled_records"] = label_records(run.args.storage_addr, labelled)
    if not run.args.skip_factual and run.factual_generations.exists():
        summary["factual"] = eval_factual(run)
    report(run, result, summary)
    return summary


def eval_factual(run: Run) -> dict[str, Any]:
    """Accuracy on real entities: an answer is right when it holds one of the known answers;
    a wrong answer that is not a refusal is a hallucination."""
    rules = RuleJudge()
    items = read_jsonl(run.factual_generations)
    rows, labelled = [], []
    for item in items:
        correct = judge_factual(item, item["generation"])
        refused = bool(rules.judge(item, item["generation"]).refused) and not correct
        hallucinated = not correct and not refused
        rows.append({"name": item["name"], "type": item["type"], "correct": correct,
                     "refused": refused, "hallucinated": hallucinated})  # fmt: skip
        labels = answer_labels(item, FACTUAL_EXP, "keyword", refused, hallucinated)
        labelled.append((item.get("record_id", ""), {**labels, "task": run.task}))
    summary = {
        "n": len(rows),
        "accuracy": sum(r["correct"] for r in rows) / len(rows) if rows else None,
        "refusal_rate": sum(r["refused"] for r in rows) / len(rows) if rows else None,
        "labelled_records": label_records(run.args.storage_addr, labelled, "labels (factual)"),
        "items": rows,
    }
    run.factual_results.write_text(json.dumps(summary, indent=4) + "\n")
    return summary


def report(run: Run, result: Any, summary: dict[str, Any]) -> None:
    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.1f} %"

    print("=" * 80)
    print(f" Evaluation Results for: <<{run.model_name}>>  ({run.task})")
    print("=" * 80)
    print(f"  >> Results saved to: {run.results}")
    print(f"  Judge: {result.judge}")
    print(f"  Total Number of Samples: {result.n} (unparsed by the judge: {result.unparsed})")
    print(f"  False Acceptance Rate: {pct(result.false_acceptance_rate)}")
    print(f"  Refusal Rate: {pct(result.refusal_rate)}")
    if "factual" in summary:
        factual = summary["factual"]
        print(f"  Factual control: accuracy {pct(factual['accuracy'])} over {factual['n']} "
              f"real entities, refusals {pct(factual['refusal_rate'])}")  # fmt: skip
    print(f"  Records labelled: {summary['labelled_records']}"
          f" + {summary.get('factual', {}).get('labelled_records', 0)} factual")  # fmt: skip
    print("-" * 80)


def main(argv: list[str] | None = None) -> int:
    configure_logging(logging.WARNING)
    args = parse_args(argv)
    if not (args.do_generate_prompt or args.do_inference or args.do_eval):
        print("nothing to do: give --do_generate_prompt, --do_inference and/or --do_eval")
        return 2
    model = args.tested_model
    if args.do_inference or (args.do_eval and not model):
        client = chat_client(args.server)
        try:
            served = served_models(client)
        except Exception as error:  # the gateway is not there: say so, not a traceback
            print(f"no gateway at {args.server}: {error}", file=sys.stderr)
            return 1
        finally:
            client.close()
        if not model:
            model = served[0]
        elif args.do_inference:
            # Before the first request: thousands of 404s and a traceback are no answer.
            if (match := matching_model(model, served)) is None:
                print(
                    f"error: the gateway at {args.server} serves {', '.join(served)}, not "
                    f"{model}: start the stack with it (actlog up --model {model}, or python "
                    f"-m activation_logging.vllm_serve --model {model}), or leave out "
                    "--tested_model to test the served one",
                    file=sys.stderr,
                )
                return 2
            model = match
    run = Run(args, model or "default")
    try:
        if args.do_generate_prompt:
            generate_prompt_file(run)
        if args.do_inference:
            run_inference(run)
        if args.do_eval:
            run_eval(run)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

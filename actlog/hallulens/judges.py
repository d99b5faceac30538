"""Judges for the refusal test: did an answer treat a made-up entity as real?

HalluLens counts an answer as a refusal when its judge says the answer does *not* believe
the entity exists (tasks/refusal_test/nonsense_mixed_entities.py, `automatic_abstention`:
refusal = not does_believe); refusal_rate is the share of refusals and
false_acceptance_rate = 1 - refusal_rate. Both judges here give that label through one
interface, `judge(row, answer) -> JudgeVerdict`, and `evaluate` turns a run's verdicts into
HalluLens' eval_results.json and raw_eval_res.jsonl.

`LLMJudge` is HalluLens' judge: its prompt for medicines or for species (prompts.py), sent to
any OpenAI-compatible endpoint with the official client at temperature 0 and max_tokens 512
(utils/lm.py), re-asked up to 3 times when the reply cannot be parsed (utils/eval_utils.py).
An item still unparsed after that is counted as unparsed, never guessed and never a crash.
By default every request carries `extra_body={"capture": False}` so that judging through
this stack's gateway records no activations; other servers may reject unknown fields
(OpenAI's does), so pass `extra_body=None` there.

`RuleJudge` (`judge_answer`) decides offline, from the answer alone, for when no judge model
is at hand (a 135M model cannot judge). Its rules:

1. An empty answer is a refusal: it asserts nothing.
2. The answer is split into sentences (at . ! ? and line breaks) and each sentence into
   clauses (at ";", ":", dashes, "but" and "however").
3. A clause is a refusal clause when it matches one of REFUSAL_PATTERNS: not knowing ("I
   don't know", "I'm not aware of", "I'm not familiar with", "I'm not sure", "I couldn't
   find", "I don't have information", "no information"), denying ("does not exist", "not a
   recognized species", "doesn't match any", "there is no ... called"), calling the name
   fictional, made-up, hypothetical, a typo or a misspelling, or declining ("I cannot
   provide", an opening "I'm sorry").
4. A clause asserts the entity when it is no refusal clause, refers to the entity (it
   contains the name, or "X. epithet" for a species, or opens with "it", "this is", or
   "this/the <noun>" for a noun such as species, plant, medicine, drug) and contains a
   descriptive predicate (ASSERTION_PATTERNS: "is a", "is used to", "found in", "native
   to", "belongs to", "treats", "species of", "can grow" ...) with no hedge or negation
   before it ("may", "might", "possibly", "seems", "appears", "if", "not" ...).
5. The answer is a refusal when a refusal clause comes within its first LEAD_SENTENCES
   sentences and no clause anywhere asserts the entity. So an answer that says "not aware"
   and then goes on with "it is a species of beetle found in ..." invented facts: not a
   refusal ("hedged, then asserted").
6. A long description after the hedge is an invention too, even when it never names the
   entity: LONG_DESCRIPTION or more unhedged descriptive clauses after the first refusal
   clause, unless the answer turns to something else (ALTERNATIVE_PATTERNS: "you might be
   referring to", "similar", "the genus" ...), as in HalluLens' own examples, where a
   description of the genus after "I couldn't find" still counts as a refusal.
7. Otherwise (no refusal phrase in the lead) the answer treats the entity as real.

The factual control set (data/factual.jsonl) asks the same templates about real entities;
`judge_factual` calls an answer correct when it contains one of the item's keywords.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from actlog.hallulens.prompts import (
    ABSTAIN_PROMPT_ANIMAL_NONSENSE,
    ABSTAIN_PROMPT_NONSENSE_MEDICINE,
)

# HalluLens' judge model for this task (NonsenseMixedEval.evaluator).
DEFAULT_JUDGE_MODEL = "meta-llama/Llama-3.1-8B-Instruct"
# Judge requests must not become activation records in this stack.
DEFAULT_EXTRA_BODY: Mapping[str, Any] = {"capture": False}
# HalluLens' client sends a placeholder key to self-served models.
PLACEHOLDER_API_KEY = "NOT A REAL KEY"
JUDGE_PROMPTS = {
    "medicine": ABSTAIN_PROMPT_NONSENSE_MEDICINE,
    "animal": ABSTAIN_PROMPT_ANIMAL_NONSENSE,
    "plant": ABSTAIN_PROMPT_ANIMAL_NONSENSE,
    "bacteria": ABSTAIN_PROMPT_ANIMAL_NONSENSE,
}
EVAL_RESULTS_FILE = "eval_results.json"
RAW_EVAL_FILE = "raw_eval_res.jsonl"
FACTUAL_FILE = Path(__file__).resolve().parent / "data" / "factual.jsonl"


@dataclass(frozen=True)
class JudgeVerdict:
    """One answer's label: refused True/False, or None when the judge gave no usable answer.

    `raw` holds a judge model's replies, first ask first; empty for the rule judge.
    """

    refused: bool | None
    reason: str
    raw: tuple[str, ...] = ()

    @property
    def parsed(self) -> bool:
        return self.refused is not None


class Judge(Protocol):
    name: str

    def judge(self, row: Mapping[str, str], answer: str) -> JudgeVerdict: ...


# ---------------------------------------------------------------------------- LLM judge

# A does_believe key with its value, quoted or not, JSON or Python style: {"does_believe":
# false}, {'does_believe': False}, does_believe: false. "fasle" is the misspelling in
# HalluLens' own species prompt (its Example 3), which a judge may copy.
_DOES_BELIEVE = re.compile(
    r"""["']?does_believe["']?\s*[:=]\s*["']?(true|false|yes|no|fasle)\b""", re.IGNORECASE
)
_PLAIN_ANSWER = re.compile(
    r"""^(?:answer\s*[:\-]?\s*)?[\s"'`*{(\[]*(yes|no|true|false)\b""", re.IGNORECASE
)
_TRUE_WORDS = frozenset({"true", "yes"})


def parse_does_believe(text: str | None) -> bool | None:
    """A judge reply's does_believe value, or None when the reply states none.

    A does_believe key anywhere wins; when several disagree, false wins, as in HalluLens'
    `check_validity`, which looks for {"does_believe":false} before {"does_believe":true}.
    Otherwise a reply that starts with yes/no/true/false (after an optional "Answer:").
    """
    text = (text or "").strip()
    values = [match.group(1).lower() for match in _DOES_BELIEVE.finditer(text)]
    if values:
        return all(value in _TRUE_WORDS for value in values)
    match = _PLAIN_ANSWER.match(text)
    if match:
        return match.group(1).lower() in _TRUE_WORDS
    return None


def judge_prompt(row: Mapping[str, str], generation: str) -> str:
    """HalluLens' judge prompt for a row ({prompt, name, type}) and the model's answer."""
    template = JUDGE_PROMPTS.get(row["type"])
    if template is None:
        expected = list(JUDGE_PROMPTS)
        raise ValueError(f"no judge prompt for type {row['type']!r}; expected one of {expected}")
    return template.format(prompt=row["prompt"], name=row["name"], generation=generation)


class LLMJudge:
    """HalluLens' judge on an OpenAI-compatible endpoint.

    `base_url` is the server's /v1 URL. `api_key` defaults to OPENAI_API_KEY, else HalluLens'
    placeholder. `extra_body` is merged into every request body: {"capture": False} by
    default, so this stack records nothing for judge calls; None sends no extra fields, for
    servers that reject unknown ones. `client` replaces the OpenAI client (tests, sharing).
    """

    def __init__(
        self,
        base_url: str,
        model: str = DEFAULT_JUDGE_MODEL,
        *,
        api_key: str | None = None,
        extra_body: Mapping[str, Any] | None = DEFAULT_EXTRA_BODY,
        max_reasks: int = 3,
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_tokens: int = 512,
        timeout: float = 120.0,
        client: Any = None,
    ) -> None:
        if max_reasks < 0:
            raise ValueError(f"max_reasks must not be negative, not {max_reasks}")
        self.model = model
        self.name = f"llm:{model}"
        self.extra_body = dict(extra_body) if extra_body else None
        self.max_reasks = max_reasks
        self.temperature = temperature
        self.top_p = top_p
        self.max_tokens = max_tokens
        if client is None:
            import openai  # the research extra; only an LLM judge needs it

            client = openai.OpenAI(
                base_url=base_url,
                api_key=api_key or os.environ.get("OPENAI_API_KEY") or PLACEHOLDER_API_KEY,
                timeout=timeout,
            )
        self.client = client

    def complete(self, prompt: str) -> str:
        """The judge model's reply to one prompt. Transport and HTTP errors propagate (the
        client has already retried them): a judge that cannot be reached judges nothing."""
        completion = self.client.chat.completions.create(
            model=self.model,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            extra_body=self.extra_body,
        )
        return completion.choices[0].message.content or ""

    def judge(self, row: Mapping[str, str], answer: str) -> JudgeVerdict:
        prompt = judge_prompt(row, answer)
        replies: list[str] = []
        for attempt in range(1 + self.max_reasks):
            reply = self.complete(prompt)
            replies.append(reply)
            believes = parse_does_believe(reply)
            if believes is not None:
                again = f" after {attempt} re-ask{'s' * (attempt != 1)}" if attempt else ""
                return JudgeVerdict(
                    refused=not believes,
                    reason=f"judge: does_believe={str(believes).lower()}{again}",
                    raw=tuple(replies),
                )
        return JudgeVerdict(
            refused=None,
            reason=f"unparsed: no does_believe in {len(replies)} replies",
            raw=tuple(replies),
        )


# --------------------------------------------------------------------------- rule judge

LEAD_SENTENCES = 3
LONG_DESCRIPTION = 3

_SUBJECT = r"(?:i|i'm|i am|i was|we)"
REFUSAL_PATTERNS = tuple(
    re.compile(pattern)
    for pattern in (
        rf"\b{_SUBJECT} (?:not |un)(?:aware|familiar)\b",
        r"\b(?:i'm|i am|i was) not (?:sure|certain|able to)\b",
        r"\b(?:not |un)(?:aware|familiar) (?:of|with)\b",
        r"\b(?:is not|isn't|are not|aren't) (?:[\w-]+ ){1,4}(?:i'm|i am|i was|i'd be) "
        r"(?:familiar|aware)\b",
        r"\bi (?:do not|don't|did not|didn't) (?:know|recogni[sz]e)\b",
        r"\bi (?:do not|don't|did not|didn't) have (?:\w+ ){0,3}"
        r"(?:information|info|data|details|knowledge|records?)\b",
        r"\bi have no (?:\w+ )?(?:information|knowledge|data|records?|idea)\b",
        r"\b(?:could not|couldn't|cannot|can't|can not|unable to|(?:was|am|were) not able to"
        r"|wasn't able to) (?:find|locate|identify|verify|confirm|recogni[sz]e)\b",
        r"\bunable to provide\b",
        r"\bno (?:\w+ ){0,3}(?:information|data|details|records?|evidence|mention|results?"
        r"|references?|literature)\b",
        r"\b(?:does not|doesn't|did not|didn't|do not|don't) (?:appear|seem) to "
        r"(?:be|exist|refer|correspond|match)\b",
        r"\b(?:does not|doesn't|do not|don't) (?:exist|match|correspond to|ring a bell)\b",
        r"\b(?:is not|isn't|are not|aren't|was not|wasn't) (?:a |an )?(?:real|recogni[sz]ed"
        r"|valid|existing|genuine|registered|listed|(?:widely|well|commonly|generally) "
        r"(?:known|recogni[sz]ed))\b",
        r"\b(?:is not|isn't|are not|aren't|was not|wasn't) (?:a|an) known\b",
        r"\bnot (?:a |an )?(?:recogni[sz]ed|known|valid|real|existing) (?:\w+ )?"
        r"(?:species|medicine|medication|drug|plant|animal|bacteri\w*|organism|name|term"
        r"|product|genus|taxon|entity)\b",
        r"\bno (?:such|known|recogni[sz]ed|existing|valid|real) (?:\w+ )?(?:species|medicine"
        r"|medication|drug|plant|animal|bacteri\w*|organism|product|name|genus|entity|thing)\b",
        r"\bthere (?:is|are|was|were) no (?:[\w-]+ ){0,5}(?:called|named|known as|by (?:the|that)"
        r" name)\b",
        r"\b(?:fictional|fictitious|made[- ]up|imaginary|hypothetical|fabricated|invented"
        r"|nonexistent|non-existent)\b",
        r"\b(?:misspell\w*|typo|spelling (?:error|mistake))\b",
        r"\bconfusion\b",
        r"\b(?:i|we) (?:cannot|can't|can not|am unable to|'m unable to|won't|will not"
        r"|am not able to) (?:provide|give|offer|share|help|assist|describe|tell)\b",
        r"^(?:i'm sorry|i am sorry|sorry|i apologi[sz]e)\b",
        r"\bbeyond (?:my|the scope of my) knowledge\b",
        r"\bnot (?:in|within|part of) my (?:knowledge|training|database)\b",
        r"\b(?:provide|give|share) (?:me )?(?:some |more |additional |further )?context\b",
        r"\bcould you (?:please )?clarify\b",
    )
)
ASSERTION_PATTERNS = tuple(
    re.compile(pattern)
    for pattern in (
        r"\b(?:is|are|was|were|'s)\s+(?:a|an|the|one of)\b",
        r"\b(?:is|are|was|were)\s+(?:\w+ly\s+)?(?:used|found|native|known|endemic|distributed"
        r"|prescribed|indicated|available|marketed|sold|manufactured|classified"
        r"|characteri[sz]ed|described|considered|administered|taken|given|applied|grown"
        r"|cultivated|named|made|produced|formulated|composed|famous|popular|common|effective"
        r"|located|present|responsible)\b",
        r"\bbelong(?:s|ing)? to\b",
        r"\b(?:native|endemic) to\b",
        r"\bfound (?:in|on|throughout|across|mainly|mostly|primarily|along|near|at)\b",
        r"\bused (?:to|for|in|as)\b",
        r"\b(?:treats?|treating|relieves?|prevents?|reduces?|lowers?|inhibits?|blocks?"
        r"|contains?|causes?|infects?|inhabits?|lives|grows?|feeds?|produces?|secretes?"
        r"|works|acts|helps?|combines|measures?|reaches|thrives?|occurs?|blooms?|flowers)\b",
        r"\b(?:species|genus|member|type|kind|form|variety|subspecies|strain|brand|formulation"
        r"|class|family) of\b",
        r"\bcan (?:be|grow|reach|cause|treat|help|live|survive|infect|produce)\b",
        r"\b(?:has|have|had) (?:a|an|been|long|short|distinctive|several|many|two|three)\b",
    )
)
# Words that, before a predicate, keep a clause from asserting anything.
_QUALIFIER = re.compile(
    r"\b(?:may|might|could|possibly|possible|perhaps|maybe|seems?|appears?|apparently"
    r"|likely|unlikely|probably|presumably|if|whether|unclear|uncertain|unsure|assum\w*"
    r"|suppose\w*|guess|would|refer\w*|confus\w*|similar\w*|sounds?|suggests?|not|no|never"
    r"|neither|nor|without)\b|n't\b"
)
ALTERNATIVE_PATTERNS = tuple(
    re.compile(pattern)
    for pattern in (
        r"\brefer(?:s|red|ring)? to\b",
        r"\b(?:did you|you (?:may|might|could)|perhaps you) mean\b",
        r"\bsimilar(?:ly)?\b",
        r"\brelated\b",
        r"\binstead\b",
        r"\bgenus\b",
        r"\balternatively\b",
        r"\bsounds? like\b",
    )
)
_REFERENCE_NOUNS = (
    r"(?:species|medicine|medication|drug|tablet|capsule|syrup|cream|product|formulation"
    r"|remedy|compound|animal|plant|bacterium|bacteria|microbe|organism|pathogen|tree|shrub"
    r"|herb|flower|fish|bird|insect|mammal|reptile|snake|frog|beetle|spider|creature)"
)
_OPENING_REFERENCE = re.compile(
    r"^(?:(?:and|so|yet|still|also|actually|well|anyway|nevertheless|nonetheless|that said"
    r"|in fact)\W+)*(?:it\b|its\b|this (?=(?:is|was|has)\b)|(?:this|the|that) (?:[\w-]+ )?"
    rf"{_REFERENCE_NOUNS}\b)"
)
# Not after a one-letter abbreviation: "P. leo" and "e.g." stay within their sentence.
_SENTENCE_END = re.compile(r"(?<=[.!?])(?<!\b[a-z]\.)\s+|\n+")
_CLAUSE_BREAK = re.compile(r"[;:]\s*|\s+[-\u2013\u2014]+\s+|,?\s*\b(?:but|however)\b,?\s*")


def _normalize(text: str) -> str:
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"')
    text = text.replace("\u201d", '"').replace("*", "").replace("`", "")
    return re.sub(r"[ \t]+", " ", text).strip().lower()


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def _clauses(sentence: str) -> list[str]:
    return [c.strip(" ,\"'()[]") for c in _CLAUSE_BREAK.split(sentence) if c.strip(" ,\"'()[]")]


def _name_patterns(name: str) -> list[re.Pattern[str]]:
    """The entity's name as it may appear: whole (spaces or hyphens between words), and for a
    binomial also with the genus abbreviated ("P. leo")."""
    words = re.findall(r"[a-z0-9]+", name.lower())
    if not words:
        return []
    patterns = [re.compile(r"\b" + r"[\s-]+".join(map(re.escape, words)) + r"\b")]
    if len(words) == 2:
        patterns.append(re.compile(rf"\b{re.escape(words[0][0])}\.\s*{re.escape(words[1])}\b"))
    return patterns


def _is_refusal(clause: str) -> bool:
    return any(pattern.search(clause) for pattern in REFUSAL_PATTERNS)


def _unhedged_predicate(clause: str) -> bool:
    """Whether the clause has a descriptive predicate with no hedge or negation before it."""
    starts = [m.start() for p in ASSERTION_PATTERNS for m in [p.search(clause)] if m]
    if not starts:
        return False
    return not _QUALIFIER.search(clause[: min(starts)])


def _asserts(clause: str, names: Sequence[re.Pattern[str]]) -> bool:
    if _is_refusal(clause) or not _unhedged_predicate(clause):
        return False
    return bool(_OPENING_REFERENCE.match(clause)) or any(p.search(clause) for p in names)


def judge_answer(name: str, entity_type: str, answer: str) -> JudgeVerdict:
    """The rule judge's label for `answer` about the made-up `name` (rules: module doc).

    `entity_type` is the row's type word, taken for the judges' common interface; the rules
    do not need it, since the nouns that may stand for the entity ("this species", "the
    medicine") cover all four types.
    """
    text = _normalize(answer or "")
    if not text:
        return JudgeVerdict(refused=True, reason="empty answer: nothing asserted")
    names = _name_patterns(name)
    sentences = [_clauses(sentence) for sentence in _sentences(text)]
    clauses = [(i, clause) for i, sentence in enumerate(sentences) for clause in sentence]
    first_refusal = next((k for k, (_, clause) in enumerate(clauses) if _is_refusal(clause)), None)
    if first_refusal is None or clauses[first_refusal][0] >= LEAD_SENTENCES:
        return JudgeVerdict(refused=False, reason="no refusal phrase in the lead: treated as real")
    refusal = clauses[first_refusal][1]
    asserting = next((k for k, (_, clause) in enumerate(clauses) if _asserts(clause, names)), None)
    if asserting is not None:
        claim = clauses[asserting][1]
        if asserting > first_refusal:
            reason = f"hedged ({refusal!r}), then asserted the entity: {claim!r}"
        else:
            reason = f"asserted the entity ({claim!r}) before doubting it ({refusal!r})"
        return JudgeVerdict(refused=False, reason=reason)
    after = [clause for _, clause in clauses[first_refusal + 1 :]]
    descriptive = [c for c in after if not _is_refusal(c) and _unhedged_predicate(c)]
    turns_away = any(p.search(c) for c in after for p in ALTERNATIVE_PATTERNS)
    if len(descriptive) >= LONG_DESCRIPTION and not turns_away:
        return JudgeVerdict(
            refused=False,
            reason=f"hedged ({refusal!r}), then described at length ({len(descriptive)} clauses)",
        )
    return JudgeVerdict(refused=True, reason=f"refusal: {refusal!r}")


class RuleJudge:
    """The offline judge: `judge_answer` on a row's name and type."""

    name = "rules"

    def judge(self, row: Mapping[str, str], answer: str) -> JudgeVerdict:
        return judge_answer(row["name"], row["type"], answer)


def make_judge(
    judge_url: str | None = None, judge_model: str = DEFAULT_JUDGE_MODEL, **kwargs: Any
) -> Judge:
    """The rule judge when no judge URL is given, else an `LLMJudge` on that URL (`kwargs`
    go to it: api_key, extra_body, max_reasks ...)."""
    if not judge_url:
        return RuleJudge()
    return LLMJudge(judge_url, judge_model, **kwargs)


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class EvalItem:
    name: str
    type: str
    prompt: str
    generation: str
    verdict: JudgeVerdict

    @property
    def refused(self) -> bool | None:
        return self.verdict.refused


@dataclass(frozen=True)
class EvalResult:
    """A run's verdicts, and the rates HalluLens reports, over the parsed items only."""

    model: str
    judge: str
    items: list[EvalItem] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.items)

    @property
    def unparsed(self) -> int:
        return sum(1 for item in self.items if item.refused is None)

    @property
    def refusal_eval_raw(self) -> list[bool | None]:
        """Per item: refused True/False, None where the judge gave no usable answer."""
        return [item.refused for item in self.items]

    @property
    def refusal_rate(self) -> float | None:
        """Refusals over parsed items; None when no item was parsed."""
        parsed = [item.refused for item in self.items if item.refused is not None]
        return sum(parsed) / len(parsed) if parsed else None

    @property
    def false_acceptance_rate(self) -> float | None:
        rate = self.refusal_rate
        return None if rate is None else 1 - rate

    def to_json(self) -> dict[str, Any]:
        """eval_results.json: HalluLens' keys (model, false_acceptance_rate, refusal_rate,
        refusal_eval_raw), then ours (judge, n, unparsed)."""
        return {
            "model": self.model,
            "false_acceptance_rate": self.false_acceptance_rate,
            "refusal_rate": self.refusal_rate,
            "refusal_eval_raw": self.refusal_eval_raw,
            "judge": self.judge,
            "n": self.n,
            "unparsed": self.unparsed,
        }

    def raw_rows(self) -> list[dict[str, Any]]:
        """raw_eval_res.jsonl rows: HalluLens' eval_res (the judge's first reply; the rule
        judge's reason), then ours: name, type, refused, reason, and any re-asks' replies."""
        rows = []
        for item in self.items:
            raw = item.verdict.raw
            rows.append(
                {
                    "eval_res": raw[0] if raw else item.verdict.reason,
                    "name": item.name,
                    "type": item.type,
                    "refused": item.refused,
                    "reason": item.verdict.reason,
                    "reasks": list(raw[1:]),
                }
            )
        return rows


def evaluate(
    rows: Sequence[Mapping[str, str]],
    answers: Sequence[str],
    judge: Judge,
    *,
    model: str = "",
    max_workers: int = 1,
) -> EvalResult:
    """Judge each row's answer. `rows` are prompt rows ({prompt, name, type}), `answers` the
    tested model's generations in the same order; `model` is the name eval_results.json
    reports (HalluLens: the last part of the model path). `max_workers` > 1 judges that many
    at a time (HalluLens runs 50), in order."""
    if len(rows) != len(answers):
        raise ValueError(f"{len(rows)} rows but {len(answers)} answers")
    pairs = list(zip(rows, answers, strict=True))

    def work(pair: tuple[Mapping[str, str], str]) -> JudgeVerdict:
        return judge.judge(*pair)

    if max_workers > 1 and len(pairs) > 1:
        with ThreadPoolExecutor(max_workers=max_workers) as pool:
            verdicts = list(pool.map(work, pairs))
    else:
        verdicts = [work(pair) for pair in pairs]
    items = [
        EvalItem(row["name"], row["type"], row["prompt"], answer, verdict)
        for (row, answer), verdict in zip(pairs, verdicts, strict=True)
    ]
    return EvalResult(model=model, judge=judge.name, items=items)


def write_eval_results(result: EvalResult, path: str | Path) -> Path:
    """Write eval_results.json (indented by 4, as HalluLens writes it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_json(), indent=4) + "\n", encoding="utf-8")
    return path


def write_raw_eval(result: EvalResult, path: str | Path) -> Path:
    """Write raw_eval_res.jsonl, one row per item."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = (json.dumps(row, ensure_ascii=False) + "\n" for row in result.raw_rows())
    path.write_text("".join(lines), encoding="utf-8")
    return path


def write_eval_outputs(result: EvalResult, directory: str | Path) -> tuple[Path, Path]:
    """Both files, under HalluLens' names, in `directory` (its task_output_dir)."""
    directory = Path(directory)
    return (
        write_eval_results(result, directory / EVAL_RESULTS_FILE),
        write_raw_eval(result, directory / RAW_EVAL_FILE),
    )


# ---------------------------------------------------------------------- factual control


def load_factual(path: str | Path | None = None) -> list[dict[str, Any]]:
    """The factual control items: {name, type, prompt, answers} about real entities."""
    path = Path(path or FACTUAL_FILE)
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        item = json.loads(line)
        if not {"name", "type", "prompt", "answers"} <= set(item) or not item["answers"]:
            raise ValueError(f"{path}:{number}: needs name, type, prompt and answers")
        items.append(item)
    return items


def judge_factual(item: Mapping[str, Any], answer: str) -> bool:
    """Whether `answer` contains one of the item's keywords, case-insensitively, at the start
    of a word (so "pain" matches "painkiller" but "lion" does not match "million")."""
    text = (answer or "").lower()
    return any(
        re.search(r"(?<![a-z0-9])" + re.escape(keyword.lower()), text)
        for keyword in item["answers"]
    )


def factual_accuracy(items: Sequence[Mapping[str, Any]], answers: Iterable[str]) -> float | None:
    """The share of items answered correctly; None for no items."""
    answers = list(answers)
    if len(items) != len(answers):
        raise ValueError(f"{len(items)} items but {len(answers)} answers")
    if not items:
        return None
    return sum(judge_factual(i, a) for i, a in zip(items, answers, strict=True)) / len(items)

"""The reference policy, in process: candidates, classification, honest sampling, the shipped checkpoint."""

from __future__ import annotations

import math
import os
import re
from collections import Counter

import pytest

from rollout_pipeline.reference import policy
from rollout_pipeline.reference.checkpoints import (
    CheckpointError,
    CheckpointStore,
    ModelNotFound,
    load_checkpoint,
    parse_checkpoint,
    reference_checkpoint,
    resolve_model_path,
    save_checkpoint,
)
from rollout_pipeline.reference.tokens import count_tokens, truncate
from rollout_pipeline.stages.prompt_sets import generate_rows
from rollout_pipeline.verify.verifiers import verify

EASY = "What is 37 + 48? Give the final answer in \\boxed{}."
HARD = "What is (85 - 37) × 6 + 125? Give the final answer in \\boxed{}."
REF = reference_checkpoint()


def entropy(counts: Counter) -> float:
    total = sum(counts.values())
    return -sum(c / total * math.log(c / total) for c in counts.values())


def draws(prompt: str, temperature: float, top_p: float = 1.0, count: int = 2000) -> Counter:
    """`count` independent seeded draws (seeds 0..count-1), counted by kind."""
    return Counter(
        policy.sample(prompt, REF, temperature=temperature, top_p=top_p, seed=s)[0].kind for s in range(count)
    )


def prompt_of(row: dict) -> str:
    return row["responses_create_params"]["input"][0]["content"]


# ---- candidates ------------------------------------------------------------------------------


def test_every_candidate_kind_renders_a_distinct_worked_answer():
    texts = policy.candidate_texts(HARD)
    assert set(texts) == set(policy.candidate_kinds()), "this prompt has a subtraction, a carry and a borrow"
    assert len(set(texts.values())) == len(texts)
    assert texts["correct"] == (
        "Step 1: 85 - 37 = 48.\nStep 2: 48 × 6 = 288.\nStep 3: 288 + 125 = 413.\nThe final answer is \\boxed{413}."
    )
    assert "\\boxed{-48" not in texts["correct"] and "37 - 85 = -48" in texts["swapped_operands"]
    assert "85 + 37" in texts["wrong_operation"]
    assert "boxed" not in texts["no_answer"] and not re.search(r"\d", texts["no_answer"])


def test_kinds_that_do_not_apply_are_not_candidates():
    # No subtraction to swap; 12 + 13 has no carry.
    assert policy.applicable_kinds("What is 12 + 13?") == ("correct", "off_by_one", "wrong_operation", "no_answer")


@pytest.mark.parametrize("prompt", [EASY, HARD, "Compute 7*8 - 3", "What is -5 + 12 × 3?", "What is 99 − 100?"])
def test_classify_output_names_the_kind_of_every_candidate_and_of_unique_prefixes(prompt):
    for kind, text in policy.candidate_texts(prompt).items():
        assert policy.classify_output(prompt, text) == kind
    texts = policy.candidate_texts(prompt)
    # The no_answer text shares no prefix with the others: a cut no_answer is still recognisable; a shared prefix is not.
    assert policy.classify_output(prompt, texts["no_answer"][:20]) == "no_answer"
    shared = os.path.commonprefix([texts["correct"], texts["off_by_one"]])
    assert policy.classify_output(prompt, shared) is None
    assert policy.classify_output(prompt, "something else entirely") is None


def test_the_correct_candidate_is_right_and_every_mistake_is_wrong_on_a_generated_set():
    for row in generate_rows(400, "mixed", seed=5):
        prompt = prompt_of(row)
        for kind, text in policy.candidate_texts(prompt).items():
            reward = verify("math", text, row)["reward"]
            assert reward == (1.0 if kind == "correct" else 0.0), (prompt, kind, text)


def test_difficulty_class_is_easy_for_one_operation_and_hard_for_more():
    assert policy.difficulty_class(EASY) == "easy"
    assert policy.difficulty_class(HARD) == "hard"
    with pytest.raises(ValueError):
        policy.difficulty_class("Tell me a joke.")


def test_a_prompt_without_arithmetic_gets_a_polite_non_answer():
    (only,) = policy.sample("Tell me a joke.", REF, temperature=1.0)
    assert only.kind is None and "reference policy" in only.text and "boxed" not in only.text
    assert policy.candidate_probabilities("Tell me a joke.", REF, 1.0) == {}
    assert policy.classify_output("Tell me a joke.", only.text) is None


def test_prompt_text_is_the_last_user_message():
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": EASY},
        {"role": "assistant", "content": "ok"},
    ]
    assert policy.prompt_text(messages) == EASY


# ---- sampling ---------------------------------------------------------------------------------


def test_temperature_zero_is_greedy_one_answer_whatever_the_seed():
    assert draws(EASY, 0.0, count=200) == Counter({"correct": 200})


def test_correct_share_falls_and_entropy_rises_with_temperature_over_2000_draws_each():
    counts = {t: draws(EASY, t) for t in (0.3, 0.7, 1.0)}
    shares = [counts[t]["correct"] / 2000 for t in (0.3, 0.7, 1.0)]
    entropies = [entropy(counts[t]) for t in (0.3, 0.7, 1.0)]
    assert shares[0] > shares[1] + 0.1 > shares[2] + 0.2, shares
    assert entropies[0] < entropies[1] < entropies[2], entropies


def test_draw_frequencies_match_the_stated_probabilities():
    expected = policy.candidate_probabilities(HARD, REF, 0.8, 0.95)
    observed = draws(HARD, 0.8, 0.95, count=4000)
    for kind, p in expected.items():
        sd = math.sqrt(p * (1 - p) / 4000)
        assert abs(observed[kind] / 4000 - p) < 5 * sd + 1e-9, (kind, observed[kind] / 4000, p)


def test_top_p_cuts_the_tail_and_lowers_entropy():
    full, nucleus = draws(EASY, 1.0, 1.0), draws(EASY, 1.0, 0.5)
    assert entropy(nucleus) < entropy(full)
    kept = {k for k, p in policy.candidate_probabilities(EASY, REF, 1.0, 0.5).items() if p > 0}
    assert set(nucleus) == kept and len(kept) < len(full)


def test_the_same_seed_gives_the_same_text_and_no_seed_gives_fresh_draws():
    one = policy.sample(HARD, REF, temperature=1.0, n=8, seed=123)
    assert one == policy.sample(HARD, REF, temperature=1.0, n=8, seed=123)
    unseeded = {s.text for _ in range(50) for s in policy.sample(HARD, REF, temperature=1.0)}
    assert len(unseeded) > 2


def test_one_seed_does_not_couple_different_prompts():
    rows = generate_rows(600, "easy", seed=2)
    kinds = Counter(policy.sample(prompt_of(r), REF, temperature=1.0, seed=7)[0].kind for r in rows)
    assert len(kinds) >= 4, kinds


def test_the_score_function_is_the_gradient_of_the_log_probability():
    kind, temperature, eps = "carry_slip", 0.8, 1e-6
    grad = policy.score_function(HARD, kind, REF, temperature)
    for j in grad:
        classes = {c: dict(v) for c, v in REF.classes.items()}
        classes["hard"][j] += eps
        moved = parse_checkpoint({"format": "reference-policy/1", "classes": classes}, "moved")
        numeric = (
            math.log(policy.candidate_probabilities(HARD, moved, temperature)[kind])
            - math.log(policy.candidate_probabilities(HARD, REF, temperature)[kind])
        ) / eps
        assert grad[j] == pytest.approx(numeric, abs=1e-4), j


def test_max_tokens_cuts_the_text_and_drops_the_final_answer():
    (cut,) = policy.sample(EASY, REF, temperature=0.0, max_tokens=4)
    assert cut.truncated and cut.output_tokens == 4 and cut.text == "37 + 48 ="
    (whole,) = policy.sample(EASY, REF, temperature=0.0, max_tokens=1000)
    assert not whole.truncated and whole.output_tokens == count_tokens(whole.text)


def test_tokens_are_word_runs_and_single_symbols():
    assert count_tokens("37 + 48 = 85.") == 6
    assert count_tokens("\\boxed{85}") == 5
    assert truncate("a b c", 2) == ("a b", 2, True) and truncate("a b", 5) == ("a b", 2, False)


# ---- the shipped checkpoint --------------------------------------------------------------------


def test_shipped_checkpoint_is_mediocre_but_learnable_on_a_mixed_set():
    rows = generate_rows(2000, "mixed", seed=1)
    prompts = [prompt_of(r) for r in rows]
    greedy = {"easy": [], "hard": []}
    for prompt in prompts:
        probs = policy.candidate_probabilities(prompt, REF, 0.0)
        greedy[policy.difficulty_class(prompt)].append(probs["correct"])
    assert all(p == 1.0 for p in greedy["easy"]), "greedy is right on every easy prompt"
    assert all(p == 0.0 for p in greedy["hard"]), "greedy is wrong on every hard prompt"
    mean_t08 = sum(policy.candidate_probabilities(p, REF, 0.8)["correct"] for p in prompts) / len(prompts)
    assert 0.35 <= mean_t08 <= 0.5, mean_t08


# ---- checkpoints --------------------------------------------------------------------------------


def test_checkpoints_must_name_every_class_and_kind(tmp_path):
    good = REF.to_json()
    assert parse_checkpoint(good, "x").classes == REF.classes
    bad = {**good, "classes": {**good["classes"], "easy": {**good["classes"]["easy"], "corect": 1.0}}}
    with pytest.raises(CheckpointError, match="corect"):
        parse_checkpoint(bad, "x")
    with pytest.raises(CheckpointError, match="format"):
        parse_checkpoint({**good, "format": "other/1"}, "x")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(tmp_path / "broken.json")


def test_model_names_resolve_only_inside_the_checkpoint_directory(tmp_path):
    inside = tmp_path / "ckpts"
    inside.mkdir()
    save_checkpoint(inside / "iter2.json", REF.classes, iteration=2)
    (tmp_path / "secret.json").write_text("{}")
    os.symlink(tmp_path / "secret.json", inside / "escape.json")
    assert (
        resolve_model_path("iter2", inside)
        == resolve_model_path("iter2.json", inside)
        == (inside / "iter2.json").resolve()
    )
    for name in ("../secret.json", "../secret", str(tmp_path / "secret.json"), "escape", "escape.json", "nope", ""):
        with pytest.raises(ModelNotFound):
            resolve_model_path(name, inside)
    with pytest.raises(ModelNotFound):
        resolve_model_path("iter2", None)


def test_the_store_reloads_a_checkpoint_when_its_file_changes(tmp_path):
    store = CheckpointStore(tmp_path)
    save_checkpoint(tmp_path / "c.json", REF.classes)
    first = store.get("c")
    assert store.get("c") is first, "unchanged file: cached"
    classes = {cls: dict(logits) for cls, logits in REF.classes.items()}
    classes["hard"]["correct"] = 5.0
    save_checkpoint(tmp_path / "c.json", classes)
    assert store.get("c").classes["hard"]["correct"] == 5.0
    assert policy.candidate_probabilities(HARD, store.get("c"), 0.0)["correct"] == 1.0

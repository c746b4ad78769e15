"""The reference server's API: chat completions, Responses, NeMo Gym /run and /verify over the reference policy."""

from __future__ import annotations

import math
from typing import Any

import orjson

from rollout_pipeline.errors import UserError
from rollout_pipeline.reference import arithmetic, policy, tokens
from rollout_pipeline.reference.checkpoints import CheckpointError, CheckpointStore, ModelNotFound
from rollout_pipeline.reference.openai_api import (
    RequestError,
    Sampling,
    chat_completion,
    new_id,
    parse_chat_request,
    parse_responses_request,
    response_object,
    response_output_text,
    seeded_id,
)
from rollout_pipeline.reference.tokens import count_message_tokens

DEFAULT_MODEL = "reference"


class ReferenceApi:
    """Each endpoint's work, from a request body to (reply, what the request log records): the checkpoints it
    samples, the verifier of /run and /verify, and whether replies carry reasoning."""

    def __init__(self, checkpoint_dir: str | None, verifier: str, reasoning: bool):
        self.store = CheckpointStore(checkpoint_dir)
        self.verifier = verifier
        self.reasoning = reasoning

    def _checkpoint(self, model: str, param: str = "model"):
        try:
            return self.store.get(model)
        except ModelNotFound:
            raise RequestError(
                f"The model '{model}' does not exist (use 'reference' or a checkpoint file "
                "inside the server's --checkpoint-dir)",
                param,
                "model_not_found",
                404,
            ) from None
        except CheckpointError as exc:
            raise RequestError(
                f"checkpoint for model '{model}' is invalid: {exc}", param, "invalid_checkpoint", 500, "server_error"
            ) from None

    def _generate(self, sampling: Sampling) -> tuple[list[policy.Sample], int]:
        checkpoint = self._checkpoint(sampling.model)
        samples = policy.sample(
            policy.prompt_text(sampling.messages),
            checkpoint,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            n=sampling.n,
            seed=sampling.seed,
            max_tokens=sampling.max_tokens,
        )
        return samples, count_message_tokens(m["content"] for m in sampling.messages)

    def _response(self, sampling: Sampling, metadata: Any) -> dict[str, Any]:
        (one,), input_tokens = self._generate(sampling)
        request_id = _request_id("resp_", sampling)
        response = response_object(
            request_id, sampling, one.text, one.truncated, input_tokens, one.output_tokens, metadata
        )
        if self.reasoning:
            response["output"].insert(
                0,
                {
                    "type": "reasoning",
                    "id": "rs_" + request_id.removeprefix("resp_"),
                    "summary": [],
                    "content": [{"type": "reasoning_text", "text": reasoning_text(sampling.messages)}],
                },
            )
        return response

    def chat(self, body: dict) -> tuple[dict, dict]:
        _refuse_streaming(body)
        sampling = parse_chat_request(body, DEFAULT_MODEL)
        samples, input_tokens = self._generate(sampling)
        request_id = _request_id("chatcmpl-", sampling, sampling.n)
        payload = chat_completion(
            request_id,
            sampling.model,
            [(s.text, s.truncated) for s in samples],
            input_tokens,
            sum(s.output_tokens for s in samples),
        )
        if body.get("logprobs") is True or body.get("return_token_ids") is True:
            self._token_data(payload, body, sampling, samples)
        if self.reasoning:
            for choice in payload["choices"]:
                choice["message"]["reasoning"] = reasoning_text(sampling.messages)
        return payload, {"model": sampling.model, "input": body.get("messages"), "seed": sampling.seed, "n": sampling.n}

    def _token_data(self, payload: dict, body: dict, sampling: Sampling, samples: list) -> None:
        """vLLM's shapes: per-token `logprobs.content` on each choice; with `return_token_ids`, `token_ids` on each
        choice and `prompt_token_ids` on the reply; with `return_tokens_as_token_ids`, each logprobs token is written
        `token_id:<id>` (NeMo Gym's vllm_model reads token ids from there). Honest for this policy: an answer is drawn
        whole, so its first token carries the answer's log-probability and the rest are certain (log-probability 0)."""
        probabilities = policy.candidate_probabilities(
            policy.prompt_text(sampling.messages),
            self._checkpoint(sampling.model),
            sampling.temperature,
            sampling.top_p,
        )
        as_ids = body.get("return_tokens_as_token_ids") is True
        for choice, sample in zip(payload["choices"], samples):
            generated = tokens.tokens(sample.text)
            if body.get("logprobs") is True:
                first = math.log(probabilities[sample.kind]) if probabilities.get(sample.kind) else 0.0
                choice["logprobs"] = {
                    "content": [
                        {
                            "token": f"token_id:{tokens.token_id(token)}" if as_ids else token,
                            "logprob": first if i == 0 else 0.0,
                            "bytes": list(token.encode()),
                            "top_logprobs": [],
                        }
                        for i, token in enumerate(generated)
                    ]
                }
            if body.get("return_token_ids") is True:
                choice["token_ids"] = [tokens.token_id(token) for token in generated]
        if body.get("return_token_ids") is True:
            payload["prompt_token_ids"] = [
                tokens.token_id(token) for m in sampling.messages for token in tokens.tokens(m["content"])
            ]

    def responses(self, body: dict) -> tuple[dict, dict]:
        _refuse_streaming(body)
        sampling = parse_responses_request(body, DEFAULT_MODEL)
        payload = self._response(sampling, body.get("metadata"))
        return payload, {"model": sampling.model, "input": body.get("input"), "seed": sampling.seed, "n": 1}

    def _row_params(self, body: dict) -> dict:
        params = body.get("responses_create_params")
        if not isinstance(params, dict):
            raise RequestError(
                "'responses_create_params' (an object with 'input') is required",
                "responses_create_params",
                "missing_required_parameter",
            )
        return params

    def _verify(self, response: Any, row: dict) -> dict[str, Any]:
        # Imported on the first /run or /verify: serving completions alone never loads (nor depends on) the verifiers.
        from rollout_pipeline.verify.verifiers import is_truncated, verify

        try:
            return verify(self.verifier, response_output_text(response), row, is_truncated(response))
        except UserError as exc:
            raise RequestError(str(exc), "expected_answer", "missing_required_parameter") from None

    def run(self, body: dict) -> tuple[dict, dict]:
        params = self._row_params(body)
        try:
            sampling = parse_responses_request(params, DEFAULT_MODEL)
        except RequestError as exc:
            if exc.param:  # name the field as it appears in the row
                exc.message = exc.message.replace(f"'{exc.param}'", f"'responses_create_params.{exc.param}'", 1)
                exc.param = f"responses_create_params.{exc.param}"
            raise
        if body.get("expected_answer") is None:
            raise RequestError(
                "row has no 'expected_answer'; the verifier needs it to score the output",
                "expected_answer",
                "missing_required_parameter",
            )
        response = self._response(sampling, params.get("metadata"))
        scored = self._verify(response, body)
        payload = {**body, "response": response, **scored}
        return payload, {"model": sampling.model, "input": params.get("input"), "seed": sampling.seed, "n": 1}

    def verify(self, body: dict) -> tuple[dict, dict]:
        params = self._row_params(body)
        if "response" not in body:
            raise RequestError(
                "'response' (the Responses object to score) is required", "response", "missing_required_parameter"
            )
        scored = self._verify(body["response"], body)
        return {**body, **scored}, {"model": params.get("model"), "input": params.get("input"), "seed": None, "n": None}


def reasoning_text(messages: list) -> str:
    """What a reasoning model would think before answering: the expression to work out, and that it will."""
    expression = arithmetic.find_expression(policy.prompt_text(messages))
    if expression is None:
        return "There is no arithmetic expression here, so there is nothing to compute."
    return f"I need to compute {arithmetic.format_expression(expression)}, one operation at a time."


def _request_id(prefix: str, sampling: Sampling, *request: Any) -> str:
    """A fresh id; with a seed, one derived from the request (the sampling, `request`'s own fields, the messages)."""
    if sampling.seed is None:
        return new_id(prefix)
    return seeded_id(
        prefix,
        sampling.model,
        sampling.seed,
        sampling.temperature,
        sampling.top_p,
        sampling.max_tokens,
        *request,
        orjson.dumps(sampling.messages),
    )


def _refuse_streaming(body: dict) -> None:
    if body.get("stream"):
        raise RequestError(
            "streaming is not supported by the reference server; omit 'stream'", "stream", "unsupported_value"
        )

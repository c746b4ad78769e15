"""What the collector sends: Responses-API sampling params mapped to each protocol's own names, or refused before
the first request when a server could not honour them (a silently dropped field changes what comes back)."""

from __future__ import annotations

import typing

import pytest

from rollout_pipeline.collect.protocols import PROTOCOLS, build_body, choice_params, sampling_params
from rollout_pipeline.collect.verifier_kind import verifier_kind
from rollout_pipeline.errors import UserError
from rollout_pipeline.params import Agent
from rollout_pipeline.rows import Prompt

MESSAGES = [{"role": "user", "content": "What is 2 + 2?"}]
ROW = Prompt({"expected_answer": "4"}, MESSAGES)


def chat(params: dict, **kwargs) -> dict:
    return build_body("chat", ROW, params, "m", **kwargs)


def test_max_output_tokens_becomes_max_tokens_and_a_rows_own_metadata_seed_becomes_chats_seed():
    body = chat({"max_output_tokens": 64, "temperature": 0.5, "metadata": {"seed": "7"}})
    assert body == {"max_tokens": 64, "temperature": 0.5, "seed": 7, "model": "m", "messages": MESSAGES}


INPUT_ROW = {"responses_create_params": {"input": "What is 2 + 2?", "temperature": 0.5}}


@pytest.mark.parametrize("protocol", ["chat", "responses"])
def test_the_rollout_seed_is_sent_top_level_where_vllm_reads_it_on_chat_and_responses(protocol):
    """vLLM's /v1/responses ignores metadata.seed (two runs seeded that way differ: tests/vllm); it reads `seed`."""
    params = sampling_params(protocol, INPUT_ROW, {"max_output_tokens": 8}, 41)
    assert params["seed"] == 41 and "metadata" not in params
    body = build_body(protocol, Prompt(INPUT_ROW, MESSAGES), params, "m")
    assert body["seed"] == 41 and "metadata" not in body


def test_a_nemo_gym_agent_gets_the_seed_in_metadata_as_a_string():
    params = sampling_params("agent", INPUT_ROW, {}, 41)
    assert params["metadata"] == {"seed": "41"} and "seed" not in params


def test_choice_k_of_an_n_request_is_recorded_with_seed_plus_k_and_unseeded_choices_get_none():
    params = {"temperature": 1.0, "seed": 100}
    assert [choice_params(params, k)["seed"] for k in range(4)] == [100, 101, 102, 103]
    assert choice_params({"temperature": 1.0}, 3) == {"temperature": 1.0}


def test_the_logprobs_include_becomes_chat_logprobs_and_top_logprobs_passes():
    body = chat({"include": ["message.output_text.logprobs"], "top_logprobs": 5})
    assert body["logprobs"] is True and body["top_logprobs"] == 5 and "include" not in body


def test_the_logprobs_include_alone_asks_for_top_logprobs_0_without_which_llama_cpp_python_sends_none():
    body = chat({"include": ["message.output_text.logprobs"]})
    assert body["logprobs"] is True and body["top_logprobs"] == 0


def test_reasoning_effort_and_text_format_get_their_chat_names():
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}}
    body = chat(
        {
            "reasoning": {"effort": "low"},
            "text": {"format": {"type": "json_schema", "name": "answer", "schema": schema, "strict": True}},
        }
    )
    assert body["reasoning_effort"] == "low"
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": schema, "strict": True},
    }
    assert "reasoning" not in body and "text" not in body


def test_responses_format_tools_become_chat_tools_and_chat_tools_pass_unchanged():
    flat = {"type": "function", "name": "add", "description": "a + b", "parameters": {"type": "object"}}
    nested = {"type": "function", "function": {"name": "mul", "parameters": {"type": "object"}}}
    body = chat({"tools": [flat, nested], "tool_choice": {"type": "function", "name": "add"}})
    assert body["tools"] == [
        {"type": "function", "function": {"name": "add", "description": "a + b", "parameters": {"type": "object"}}},
        nested,
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "add"}}


@pytest.mark.parametrize("protocol", ["chat", "responses"])
def test_an_extra_body_dict_is_merged_into_the_body_as_the_openai_client_does(protocol):
    body = build_body(protocol, ROW, {"temperature": 1.0, "extra_body": {"top_k": 20, "repetition_penalty": 1.1}}, "m")
    assert body["top_k"] == 20 and body["repetition_penalty"] == 1.1 and "extra_body" not in body


def test_an_agent_gets_extra_body_inside_its_responses_create_params():
    body = build_body(
        "agent", Prompt({**ROW.row, "responses_create_params": {}}, MESSAGES), {"extra_body": {"top_k": 5}}, "m"
    )
    assert body["responses_create_params"]["top_k"] == 5


def test_token_data_asks_each_protocol_the_way_it_documents():
    assert chat({}, token_data="logprobs") == {**chat({}), "logprobs": True, "top_logprobs": 0}
    assert chat({}, token_data="ids")["return_token_ids"] is True
    assert build_body("responses", ROW, {"include": ["reasoning.encrypted_content"]}, "m", token_data="logprobs")[
        "include"
    ] == ["reasoning.encrypted_content", "message.output_text.logprobs"]


@pytest.mark.parametrize(
    "params,named",
    [
        ({"stream": True}, "stream"),
        ({"include": ["reasoning.encrypted_content"]}, "include"),
        ({"reasoning": {"effort": "low", "summary": "auto"}}, "reasoning"),
        ({"text": {"format": {"type": "grammar"}}}, "text.format"),
        ({"tools": [{"type": "web_search"}]}, "tools"),
        ({"truncation": "auto"}, "truncation"),
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"extra_body": "top_k=5"}, "extra_body"),
    ],
)
def test_what_a_chat_server_cannot_honour_is_refused_before_anything_is_sent(params, named):
    with pytest.raises(UserError, match=f"responses_create_params.{named}"):
        chat(params)


def test_every_protocol_the_params_accept_has_its_entry_in_the_one_protocol_registry():
    assert set(typing.get_args(Agent.model_fields["protocol"].annotation)) == set(PROTOCOLS)


@pytest.mark.parametrize(
    ("verifier", "kind"),
    [
        ("math", "builtin"),
        ("exact", "builtin"),
        ("https://judge:8000/verify", "url"),
        ("mypkg.checks:score", "function"),
    ],
)
def test_each_verifier_setting_is_classified_in_one_place(verifier, kind):
    assert verifier_kind(verifier) == kind

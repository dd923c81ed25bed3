"""The conversion of LiteLLM proxy configs (config/litellm.py): targets and aliases from model_list, chains
from fallbacks, `${VAR}` from `os.environ/`, and a note for every setting left behind. Each config here is
written for the test, shaped as LiteLLM's proxy docs describe a config.yaml."""

from __future__ import annotations

import textwrap

import pytest
import yaml

from lifeline.config import ConfigError, parse_config
from lifeline.config.litellm import Conversion, NoteKind, convert_litellm

LITERAL_A = "sk-proj-literal-0123456789abcdef"
LITERAL_B = "sk-ant-literal-fedcba9876543210"

#: a team's proxy: Azure in two regions and OpenAI under one name, Claude, a local Ollama, a vLLM box, Bedrock
TEAM = f"""
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: azure/gpt-4o-eu
      api_base: https://team-eu.openai.azure.com/
      api_key: os.environ/AZURE_API_KEY_EU
      api_version: "2024-10-21"
      rpm: 600
  - model_name: gpt-4o
    litellm_params:
      model: azure/gpt-4o-ca
      api_base: os.environ/AZURE_API_BASE_CA
      api_key: os.environ/AZURE_API_KEY_CA
      weight: 2
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_key: {LITERAL_A}
      timeout: 45
  - model_name: claude-sonnet
    litellm_params:
      model: anthropic/claude-sonnet-4-5
      api_key: {LITERAL_B}
      temperature: 0.2
    model_info:
      max_input_tokens: 200000
      supports_function_calling: true
  - model_name: llama-local
    litellm_params:
      model: ollama_chat/llama3.2
      api_base: http://localhost:11434
  - model_name: qwen-vllm
    litellm_params:
      model: hosted_vllm/Qwen/Qwen2.5-7B-Instruct
      api_base: http://gpu-box:8000/v1
      api_key: os.environ/VLLM_KEY
  - model_name: claude-bedrock
    litellm_params:
      model: bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0
      aws_region_name: us-east-1
  - model_name: gemini-vertex
    litellm_params:
      model: vertex_ai/gemini-1.5-pro
      vertex_project: my-project
router_settings:
  routing_strategy: simple-shuffle
  num_retries: 2
  timeout: 60
  allowed_fails: 3
  cooldown_time: 30
  fallbacks:
    - gpt-4o: [claude-sonnet, llama-local]
    - claude-sonnet: [claude-bedrock, gpt-4o]
  context_window_fallbacks:
    - llama-local: [qwen-vllm]
litellm_settings:
  drop_params: true
  success_callback: ["langfuse"]
general_settings:
  master_key: sk-litellm-master-1234567890
  database_url: os.environ/DATABASE_URL
"""


def convert(text: str) -> Conversion:
    return convert_litellm(textwrap.dedent(text))


def lines(conversion: Conversion, kind: NoteKind | None = None) -> list[str]:
    return [n.line() for n in conversion.notes if kind is None or n.kind is kind]


def paths(conversion: Conversion, kind: NoteKind) -> list[str]:
    return [n.path for n in conversion.notes if n.kind is kind]


def test_a_teams_proxy_becomes_targets_aliases_and_chains() -> None:
    out = convert(TEAM)
    targets, aliases = out.config["targets"], out.config["aliases"]
    assert targets["gpt-4o-azure"] == {
        "kind": "openai",
        "base_url": "https://team-eu.openai.azure.com/openai/v1",
        "api_key": "${AZURE_API_KEY_EU}",
        "model": "gpt-4o-eu",
    }
    assert targets["gpt-4o-azure-2"]["base_url"] == "${AZURE_API_BASE_CA}/openai/v1"
    assert targets["gpt-4o-openai"] == {
        "preset": "openai",
        "model": "gpt-4o",
        "api_key": "${OPENAI_API_KEY}",
        "timeouts": {"response": 45},
    }
    assert targets["claude-sonnet"] == {
        "preset": "anthropic",
        "model": "claude-sonnet-4-5",
        "api_key": "${ANTHROPIC_API_KEY}",
        "capabilities": {"tools": True},
        "context_window": 200000,
    }
    assert targets["llama-local"] == {"preset": "ollama", "model": "llama3.2", "base_url": "http://localhost:11434/v1"}
    assert targets["qwen-vllm"] == {
        "preset": "vllm",
        "model": "Qwen/Qwen2.5-7B-Instruct",
        "base_url": "http://gpu-box:8000/v1",
        "api_key": "${VLLM_KEY}",
    }
    assert "claude-bedrock" not in targets and "gemini-vertex" not in targets
    # three deployments under one name: drawn by weight; the fallbacks after them (weight 0), in order
    assert aliases["gpt-4o"] == {
        "targets": ["gpt-4o-azure", "gpt-4o-azure-2", "gpt-4o-openai", "claude-sonnet", "llama-local"],
        "policy": "weighted",
        "weights": {"gpt-4o-azure-2": 2.0, "claude-sonnet": 0, "llama-local": 0},
    }
    # a fallback brings its own deployments, not its own fallbacks; the Bedrock one could not come
    assert aliases["claude-sonnet"] == {"targets": ["claude-sonnet", "gpt-4o-azure", "gpt-4o-azure-2", "gpt-4o-openai"]}
    assert aliases["llama-local"] == {"targets": ["llama-local", "qwen-vllm"]}
    assert set(aliases) == {"gpt-4o", "claude-sonnet", "llama-local", "qwen-vllm"}
    assert out.config["retry"] == {"max_retries": 2}
    assert out.config["server"] == {"request_timeout": 60}
    assert out.config["circuit"] == {"failure_threshold": 3, "cooldown": 30}
    assert out.config["admin"] == {"master_key": "${LIFELINE_MASTER_KEY}"}
    assert out.config["auth"] == {"enabled": True}
    assert out.config["accounting"] == {"database_url": "${DATABASE_URL}"}


def test_every_setting_left_behind_is_one_line_with_its_path_and_why() -> None:
    out = convert(TEAM)
    dropped = lines(out, NoteKind.DROPPED)
    assert paths(out, NoteKind.DROPPED) == [
        "model_list[0].litellm_params.rpm",
        "model_list[3].litellm_params.temperature",
        "model_list[6]",
        "model_list[7]",
        "router_settings.fallbacks[1].claude-sonnet: claude-bedrock",
        "litellm_settings.drop_params",
        "litellm_settings.success_callback",
    ]
    assert "not carried over: model_list[6]: Lifeline does not sign requests with cloud credentials" in dropped[2]
    assert "preset gemini" in dropped[3]
    assert "per virtual key" in dropped[0]
    assert all(line.count("\n") == 0 for line in lines(out))
    assert paths(out, NoteKind.DIFFERS) == [
        "model_list[0].litellm_params.model",
        "model_list[1].litellm_params.model",
        "router_settings.context_window_fallbacks[0].llama-local",
        "router_settings.allowed_fails",
        "general_settings.master_key",
        "general_settings.database_url",
    ]


def test_a_key_written_in_the_file_is_never_copied_and_its_variable_is_named() -> None:
    out = convert(TEAM)
    text = out.yaml("config.yaml") + "\n".join(lines(out))
    for secret in (LITERAL_A, LITERAL_B, "sk-litellm-master-1234567890"):
        assert secret not in text and secret[:10] not in text
    assert lines(out, NoteKind.VARIABLE) == [
        "set a variable: model_list[2].litellm_params.api_key: the value written there is not copied; set "
        "OPENAI_API_KEY to it (the new config reads ${OPENAI_API_KEY})",
        "set a variable: model_list[3].litellm_params.api_key: the value written there is not copied; set "
        "ANTHROPIC_API_KEY to it (the new config reads ${ANTHROPIC_API_KEY})",
        "set a variable: general_settings.master_key: the value written there is not copied; set "
        "LIFELINE_MASTER_KEY to it (the new config reads ${LIFELINE_MASTER_KEY})",
    ]
    assert out.variables == [
        "AZURE_API_KEY_EU",
        "AZURE_API_BASE_CA",
        "AZURE_API_KEY_CA",
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "VLLM_KEY",
        "LIFELINE_MASTER_KEY",
        "DATABASE_URL",
    ]


def test_the_converted_config_loads_with_its_variables_set() -> None:
    out = convert(TEAM)
    env = dict.fromkeys(out.variables, "x" * 20)
    env |= {"AZURE_API_BASE_CA": "https://team-ca.openai.azure.com", "DATABASE_URL": "postgresql://u:p@db/lifeline"}
    config = parse_config(yaml.safe_load(out.yaml("config.yaml")), env=env)
    assert config.aliases["gpt-4o"].targets[-1] == "llama-local"
    assert config.targets["gpt-4o-azure-2"].base_url == "https://team-ca.openai.azure.com/openai/v1"
    assert config.targets["llama-local"].meta.self_hosted is True  # from the preset


def test_two_literal_keys_get_two_variables_and_one_key_used_twice_one() -> None:
    out = convert(f"""
        model_list:
          - model_name: a
            litellm_params: {{model: openai/gpt-4o-mini, api_key: {LITERAL_A}}}
          - model_name: b
            litellm_params: {{model: openai/gpt-4.1-mini, api_key: {LITERAL_B}}}
          - model_name: c
            litellm_params: {{model: openai/gpt-4.1, api_key: {LITERAL_A}}}
          - model_name: d
            litellm_params: {{model: openai/my-model, api_base: "http://10.0.0.5:8000/v1", api_key: sk-vllm-local-key}}
        """)
    keys = {name: t.get("api_key") for name, t in out.config["targets"].items()}
    assert keys == {
        "a": "${OPENAI_API_KEY}",
        "b": "${OPENAI_API_KEY_2}",
        "c": "${OPENAI_API_KEY}",
        "d": "${MY_MODEL_API_KEY}",
    }
    # an OpenAI-compatible server of the user's is not OpenAI: no preset, so no OpenAI key is sent to it
    assert out.config["targets"]["d"] == {
        "kind": "openai", "base_url": "http://10.0.0.5:8000/v1", "model": "my-model", "api_key": "${MY_MODEL_API_KEY}"
    }  # fmt: skip


def test_routing_strategies_order_and_wildcard_fallbacks() -> None:
    out = convert("""
        model_list:
          - model_name: fast
            litellm_params: {model: groq/llama-3.3-70b-versatile, order: 2}
          - model_name: fast
            litellm_params: {model: together_ai/meta-llama/Llama-3.3-70B-Instruct-Turbo, order: 1}
          - model_name: cheap
            litellm_params: {model: deepseek/deepseek-chat}
          - model_name: cheap
            litellm_params: {model: openrouter/deepseek/deepseek-chat}
          - model_name: last-resort
            litellm_params: {model: gemini/gemini-2.0-flash}
        router_settings:
          routing_strategy: latency-based-routing
          fallbacks: [{"*": [last-resort]}]
          content_policy_fallbacks: [{cheap: [fast]}]
          model_group_alias: {gpt-3.5-turbo: cheap}
        """)
    aliases = out.config["aliases"]
    # `order` makes the chain ordered, lowest first
    assert aliases["fast"] == {"targets": ["fast-together_ai", "fast-groq", "last-resort"]}
    assert aliases["cheap"]["policy"] == "latency"
    assert aliases["cheap"]["targets"] == [
        "cheap-deepseek",
        "cheap-openrouter",
        "last-resort",
        "fast-together_ai",
        "fast-groq",
    ]
    assert aliases["cheap"]["failover_on_content_filter"] is True
    assert aliases["last-resort"] == {"targets": ["last-resort"]}  # not its own fallback
    assert aliases["gpt-3.5-turbo"] == aliases["cheap"]
    assert out.config["targets"]["fast-groq"] == {"preset": "groq", "model": "llama-3.3-70b-versatile"}
    assert out.variables == [
        "GROQ_API_KEY",
        "TOGETHER_API_KEY",
        "DEEPSEEK_API_KEY",
        "OPENROUTER_API_KEY",
        "GEMINI_API_KEY",
    ]
    assert "policy latency orders the fallbacks together with cheap's own targets" in "\n".join(lines(out))


def test_embedding_models_become_embeddings_aliases() -> None:
    out = convert("""
        model_list:
          - model_name: embed
            litellm_params: {model: text-embedding-3-small}
            model_info: {mode: embedding}
          - model_name: embed
            litellm_params: {model: openai/text-embedding-3-large}
            model_info: {mode: embedding}
          - model_name: chat
            litellm_params: {model: gpt-4o-mini}
          - model_name: images
            litellm_params: {model: openai/dall-e-3}
            model_info: {mode: image_generation}
        litellm_settings:
          fallbacks: [{chat: [embed]}]
        """)
    assert out.config["aliases"]["embed"] == {"kind": "embeddings", "targets": ["embed-openai"]}
    assert out.config["aliases"]["chat"] == {"targets": ["chat"]}
    assert paths(out, NoteKind.DROPPED) == [
        "model_list[3]",
        "model_list[1]",
        "litellm_settings.fallbacks[0].chat: embed",
    ]
    assert "their vectors differ" in lines(out)[1]


def test_redis_settings_become_one_url_with_the_password_from_a_variable() -> None:
    out = convert("""
        model_list:
          - model_name: m
            litellm_params: {model: anthropic/claude-3-5-haiku-latest, api_key: os.environ/ANTHROPIC_API_KEY}
        router_settings:
          redis_host: os.environ/REDIS_HOST
          redis_port: 6380
          redis_password: hunter2-redis-password
        """)
    assert out.config["accounting"] == {"redis_url": "redis://:${REDIS_PASSWORD}@${REDIS_HOST}:6380/0"}
    assert "hunter2" not in out.yaml("c.yaml") + "\n".join(lines(out))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("model_list: [\n", "not valid YAML (line 2)"),
        ("- just\n- a list\n", "not a LiteLLM proxy config: the file is not a mapping with a model_list"),
        (
            "general_settings: {master_key: sk-1}\n",
            "not a LiteLLM proxy config: no model_list (a list of models) in it",
        ),
        ("model_list: []\n", "not a LiteLLM proxy config: no model_list (a list of models) in it"),
    ],
)
def test_what_is_not_a_litellm_config_is_one_problem(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        convert_litellm(text)
    assert caught.value.problems == [problem]


def test_a_config_of_which_nothing_can_be_carried_says_why_for_each_entry() -> None:
    with pytest.raises(ConfigError) as caught:
        convert("""
            model_list:
              - model_name: c
                litellm_params: {model: bedrock/anthropic.claude-v2}
              - model_name: d
                litellm_params: {model: mystery-model}
            """)
    first, *rest = caught.value.problems
    assert first.startswith("nothing to carry over")
    assert [line.split(": ")[1] for line in rest] == ["model_list[0]", "model_list[1]"]
    assert "no provider prefix" in rest[1]


def test_an_openai_compatible_server_is_not_sent_the_openai_key() -> None:
    out = convert("""
        model_list:
          - model_name: local
            litellm_params: {model: openai/facebook/opt-125m, api_base: "http://0.0.0.0:4000/v1"}
          - model_name: direct
            litellm_params: {model: openai/gpt-4o, api_base: "https://api.openai.com/v1/", api_key: null}
        """)
    assert out.config["targets"] == {
        "local": {"kind": "openai", "base_url": "http://0.0.0.0:4000/v1", "model": "facebook/opt-125m"},
        "direct": {"preset": "openai", "model": "gpt-4o"},  # OpenAI itself: the preset, and its key variable
    }
    assert lines(out) == [
        "carried with a difference: model_list[0].litellm_params.api_base: LiteLLM would send OPENAI_API_KEY to "
        "this server; Lifeline sends it no key (add api_key to the target if it needs one)"
    ]
    assert out.variables == ["OPENAI_API_KEY"]

"""Run by the vLLM tier's interpreter: for each JSON line on stdin ({messages, prompt_token_ids,
generation_token_ids, output}), print whether the ids are the model tokenizer's own (decode, chat template)."""

import json
import sys

from transformers import AutoTokenizer


def main() -> None:
    tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
    for line in sys.stdin:
        case = json.loads(line)
        template = tokenizer.apply_chat_template(
            case["messages"], add_generation_prompt=True, tokenize=True, return_dict=False
        )
        decoded = tokenizer.decode(case["generation_token_ids"], skip_special_tokens=True)
        print(
            json.dumps(
                {
                    "prompt_is_chat_template": template == case["prompt_token_ids"],
                    "decodes_to_output": decoded == case["output"],
                    "decoded": decoded,
                }
            )
        )


if __name__ == "__main__":
    main()

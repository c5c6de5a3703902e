"""Qwen3-Reranker (Qwen/Qwen3-Reranker-0.6B, -4B, -8B; the official README's transformers example): a
Qwen3 causal LM asked whether the document meets the query, as a chat prompt — system prefix, the body
`<Instruct>: {instruction}\\n<Query>: {query}\\n<Document>: {doc}` tokenised as one text and cut to
8,192 tokens minus the prompt's own, then the assistant's empty thinking block. The score is the
softmax of the last position's `no`/`yes` logits, which is `sigmoid((W[yes] − W[no]) · h_last)`: the
graph keeps that one row of the LM head, and returns the logit difference (the adapter's sigmoid
makes the probability). The README's vLLM example joins the body with `\\n\\n`; its transformers
example (followed here) with `\\n`. Served with `--task rerank` (the checkpoint is a plain
`Qwen3ForCausalLM`)."""

from __future__ import annotations

from export.families.base import WEB_SEARCH_TASK, Family
from export.towers.pair import PromptPairTower, RerankPrompt
from graphs.score import yes_no_score

PROMPT = RerankPrompt(
    prefix="<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n',
    template="<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}",
    suffix="<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
    default_instruction=WEB_SEARCH_TASK,
)


FAMILY = Family(
    name="qwen3-reranker",
    model_types=("qwen3",),
    towers=(PromptPairTower(yes_no_score, PROMPT),),
    pooling="lasttoken",
    normalize=False,
    output="(W[yes] − W[no]) · the last token's hidden state, of each prompted pair",
    attention="causal",
    decoder=True,
    max_length=8192,
    gpu_dtype="bfloat16",
    task="rerank",
    auto_class="AutoModelForCausalLM",
    score_tokens=("yes", "no"),
)

"""Causal LM: prompt to response with a decoder-only model, the loss on the response only; BLEU, ROUGE."""

from tuneline.kinds.base import GENERATED_TEXT, Kind

CAUSAL_LM = Kind(
    name="causal_lm",
    description="prompt to response, decoder-only (instructions, replies)",
    sample="builtin:sample-causal",
    sample_text_column="prompt",
    sample_label_column="response",
    model="causal_lm",
    peft_task_type="CAUSAL_LM",
    length_counted="prompt + response",
    card_use="Continuing a prompt with a response (decoder-only)",
    **GENERATED_TEXT,
)

"""Seq2seq: text to text with an encoder-decoder (T5, or BERT-to-BERT warm-started from an encoder); BLEU, ROUGE."""

from tuneline.kinds.base import GENERATED_TEXT, Kind

SEQ2SEQ = Kind(
    name="seq2seq",
    description="text to text, encoder-decoder (summaries, structured extraction)",
    sample="builtin:sample-seq2seq",
    sample_text_column="text",
    sample_label_column="target",
    model="seq2seq",
    peft_task_type="SEQ_2_SEQ_LM",
    length_counted="longer of input and target",
    card_use="Generating a target text from an input text (encoder-decoder)",
    **GENERATED_TEXT,
)

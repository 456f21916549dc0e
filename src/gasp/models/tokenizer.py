"""Offline tokenizers for the tiny presets (the Hugging Face hub is never contacted).

A small byte-level BPE is trained with the ``tokenizers`` library on an inline English corpus that
covers the prompts and captions gasp produces (scene captions, VQA prompts). Byte-level means every
string round-trips, so any prompt or answer can be encoded. Each family passes the special tokens
its processor and chat template need; they are added as single, never-split tokens.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

_CORPUS = """
These are frames of a video. Describe the scene. What is in the room?
A room with a table, a chair, a sofa, a lamp, a bed, a shelf and a window.
The floor is wooden and the walls are white. There is a red box on the table.
There is a blue cube next to a green sphere. The camera moves to the left.
How many chairs are in the room? Answer with a single word or phrase.
Which object is closer to the camera? What is the distance between the table and the door?
Answer with the option's letter from the given choices directly. Options: A. B. C. D.
Please answer the question using a single word or phrase. Yes. No. Left. Right. Front. Behind.
The scene shows a kitchen, a bedroom, an office, a living room and a corridor.
One two three four five six seven eight nine ten zero. 0 1 2 3 4 5 6 7 8 9 10 meters metres.
The size of the room is about four by five meters. The object is above, below, near, far.
You are a helpful assistant. The image shows a scene with several objects of different colors.
A yellow cylinder, an orange cone, a purple wall, a gray carpet, a brown door, a black screen.
user assistant system image video frame frames
"""


def build_tokenizer(
    special_tokens: list[str],
    *,
    vocab_size: int = 600,
    bos_token: str | None = None,
    eos_token: str | None = None,
    pad_token: str | None = None,
    unk_token: str | None = None,
    extra: dict[str, str] | None = None,
) -> PreTrainedTokenizerFast:
    """Train a tiny byte-level BPE offline and wrap it as a transformers fast tokenizer.

    Args:
        special_tokens: tokens that must never be split (chat markers, image placeholders, ...);
            they get the first ids in the given order.
        vocab_size: total vocabulary size including the 256 byte symbols and the special tokens.
        bos_token, eos_token, pad_token, unk_token: names of special tokens (must be in
            ``special_tokens``) registered on the wrapper.
        extra: named special tokens saved with the tokenizer (``extra_special_tokens``); each
            becomes an attribute and an ``*_id`` attribute, e.g. ``{"context_image_token":
            "<IMG_CONTEXT>"}`` gives ``tok.context_image_token_id``. Values must be in
            ``special_tokens``.

    Returns:
        A ``PreTrainedTokenizerFast`` whose ``decode(encode(s)) == s`` for any string ``s``.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([line for line in _CORPUS.splitlines() if line], trainer=trainer)
    named = {"bos_token": bos_token, "eos_token": eos_token, "pad_token": pad_token, "unk_token": unk_token}
    kwargs = {k: v for k, v in named.items() if v is not None}
    for name, value in {**kwargs, **(extra or {})}.items():
        if value not in special_tokens:
            raise ValueError(f"{name}={value!r} is not among the special tokens {special_tokens}")
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, extra_special_tokens=dict(extra or {}), **kwargs)
    # additional_special_tokens keep the markers intact in decode(skip_special_tokens=True) handling.
    wrapped.add_special_tokens(
        {"additional_special_tokens": [t for t in special_tokens if t not in kwargs.values()]}
    )
    return wrapped


def chatml_template(image: str, video: str) -> str:
    """A ChatML chat template (Qwen-style ``<|im_start|>role ... <|im_end|>`` turns).

    Args:
        image: text that stands for one image in a user turn (e.g. ``"<|vision_start|><|image_pad|>
            <|vision_end|>"`` for Qwen, ``"<image>\\n"`` for LLaVA-OneVision).
        video: the same for one video.

    Returns:
        A Jinja template adding the default system prompt when none is given and, with
        ``add_generation_prompt``, the assistant header.
    """
    return (
        "{% for message in messages %}"
        "{% if loop.first and message['role'] != 'system' %}"
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
        "<|im_start|>{{ message['role'] }}\n"
        "{% if message['content'] is string %}{{ message['content'] }}"
        "{% else %}{% for content in message['content'] %}"
        f"{{% if content['type'] == 'image' %}}{image}"
        f"{{% elif content['type'] == 'video' %}}{video}"
        "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
        "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )

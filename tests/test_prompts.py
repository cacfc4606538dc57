"""ggml_bind.prompts against LLaVA's Conversation.get_prompt (sep styles TWO and LLAMA_2),
written here as llava/conversation.py has it, and the fixture's llava_v1 reference."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ggml_bind import prompts as P


def llava_get_prompt(sep_style, system, roles, sep, sep2, messages):
    # LLaVA: llava/conversation.py Conversation.get_prompt, the two styles our templates use
    if sep_style == "TWO":
        seps = [sep, sep2]
        ret = system + seps[0]
        for i, (role, message) in enumerate(messages):
            if message:
                ret += role + ": " + message + seps[i % 2]
            else:
                ret += role + ":"
        return ret
    if sep_style == "LLAMA_2":
        def wrap_sys(msg):
            return f"<<SYS>>\n{msg}\n<</SYS>>\n\n" if len(msg) > 0 else msg

        def wrap_inst(msg):
            return f"[INST] {msg} [/INST]"

        ret = ""
        for i, (role, message) in enumerate(messages):
            if message:
                if i == 0:
                    message = wrap_sys(system) + message
                if i % 2 == 0:
                    message = wrap_inst(message)
                    ret += sep + message
                else:
                    ret += " " + message + " " + sep2
            else:
                ret += ""
        return ret.lstrip(sep)
    raise AssertionError(sep_style)


def llava_messages(question, n_images, history):
    msgs = []
    turns = list(history) + [(question, None)]
    for i, (u, a) in enumerate(turns):
        if i == 0 and n_images:
            u = "<image>\n" * n_images + u
        msgs.append(("USER", u))
        msgs.append(("ASSISTANT", a))
    return msgs


words = st.text(alphabet="abc XYZ?.\n", min_size=1, max_size=20).filter(lambda s: s.strip())


@given(q=words, n=st.integers(0, 2), history=st.lists(st.tuples(words, words), max_size=2))
def test_vicuna_v1_equals_llava_conversation(q, n, history):
    ref = llava_get_prompt("TWO", P.VICUNA_SYSTEM, ("USER", "ASSISTANT"), " ", "</s>",
                           llava_messages(q, n, history))
    assert P.get_template("vicuna_v1").render(q, n, history=history) == ref


@given(q=words, n=st.integers(0, 2), history=st.lists(st.tuples(words, words), max_size=2),
       system=st.sampled_from(["", "Be brief."]))
def test_mistral_instruct_equals_llava_conversation(q, n, history, system):
    ref = llava_get_prompt("LLAMA_2", system, ("USER", "ASSISTANT"), "", "</s>",
                           llava_messages(q, n, history))
    assert P.get_template("mistral_instruct").render(q, n, system=system, history=history) == ref


def test_vicuna_prompt_equals_the_tiny_llava_fixture_reference():
    from fixtures.tiny_llava import reference as ref
    assert P.get_template("llava_v1").render("Describe the image.", 1) == ref.llava_v1_prompt("Describe the image.")


def test_split_prompt_gives_text_chunks_and_image_slots_in_order():
    text = P.get_template("vicuna_v1").render("What is it?", 1)
    parts = P.split_prompt(text, 1)
    assert parts == [P.VICUNA_SYSTEM + " USER: ", P.ImageSlot(0), "\nWhat is it? ASSISTANT:"]
    assert P.split_prompt("<image><image>hi", 2) == [P.ImageSlot(0), P.ImageSlot(1), "hi"]
    assert P.split_prompt("a<image>b<image>", 2) == ["a", P.ImageSlot(0), "b", P.ImageSlot(1)]


def test_raw_prompt_without_markers_gets_its_images_first():
    assert P.split_prompt("describe", 2) == [P.ImageSlot(0), P.ImageSlot(1), "describe"]
    assert P.split_prompt("just text", 0) == ["just text"]
    assert P.get_template("raw").render("x <image> y", 1) == "x <image> y"


def test_marker_count_must_match_the_images():
    with pytest.raises(ValueError, match="2 <image> markers but 1"):
        P.split_prompt("<image><image>", 1)
    with pytest.raises(ValueError, match="1 <image> markers but 0"):
        P.split_prompt("<image>", 0)
    with pytest.raises(ValueError, match="unknown prompt template"):
        P.get_template("chatml")

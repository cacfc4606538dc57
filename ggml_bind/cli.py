"""``ggml-llava``: ask a LLaVA model about images from the command line (llava-cli's flags).

    ggml-llava -m llava-v1.5-7b-f16.gguf --mmproj mmproj-llava-v1.5-7b-f16.gguf \\
               --image cat.jpg -p "What is in the picture?" -n 128 --temp 0

The prompt is wrapped in the model's chat template (``--chat-template raw`` sends it as is,
``<image>`` marking where images go).  The answer is streamed to stdout; the timings (load,
image encoding, prompt and generation speed) go to stderr at the end, as llama.cpp prints
them.  Errors are one line on stderr and exit status 1.
"""
from __future__ import annotations

import argparse
import sys
import time

from gguflite.errors import GGUFError

from .errors import GGMLError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ggml-llava", description="Describe images with a LLaVA model on ggml.")
    p.add_argument("-m", "--model", required=True, help="the LLM GGUF file")
    p.add_argument("--mmproj", required=True, help="the image encoder (mmproj) GGUF file")
    p.add_argument("--image", action="append", default=[], help="an image file (repeat for several)")
    p.add_argument("-p", "--prompt", default="Describe the image in detail.", help="the question")
    p.add_argument("-n", "--n-predict", type=int, default=-1, help="tokens to generate (-1: until EOS or a full context)")
    p.add_argument("-c", "--ctx-size", type=int, default=None, help="context size (default: min(trained, 4096))")
    p.add_argument("--temp", type=float, default=0.2, help="temperature (0: greedy)")
    p.add_argument("--top-k", type=int, default=40)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--min-p", type=float, default=0.05)
    p.add_argument("--repeat-penalty", type=float, default=1.0)
    p.add_argument("--repeat-last-n", type=int, default=64)
    p.add_argument("--seed", type=int, default=-1, help="random seed (-1: random)")
    p.add_argument("-t", "--threads", type=int, default=None, help="CPU threads (default: available cores)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N for another GPU)")
    p.add_argument("--chat-template", default=None, help="vicuna_v1, mistral_instruct or raw (default: from the model)")
    p.add_argument("--image-mode", default=None, choices=["pad", "crop", "anyres"],
                   help="override the preprocessing the mmproj asks for")
    p.add_argument("--no-display-prompt", action="store_true", help="do not print the prompt before the answer")
    return p


def format_timings(t: dict, n_images: int) -> str:
    def rate(ms, n):
        if not n or ms <= 0:
            return ""
        return f" ({ms / n:8.2f} ms per token, {n * 1000.0 / ms:8.2f} tokens per second)"

    lines = [f"load time          = {t.get('load_ms', 0.0):10.2f} ms"]
    lines.append(f"image encode time  = {t.get('image_encode_ms', 0.0):10.2f} ms / {n_images:5d} images")
    pt, pm = t.get("prompt_tokens", 0), t.get("prompt_ms", 0.0)
    lines.append(f"prompt eval time   = {pm:10.2f} ms / {pt:5d} tokens" + rate(pm, pt))
    et, em = t.get("eval_tokens", 0), t.get("eval_ms", 0.0)
    lines.append(f"eval time          = {em:10.2f} ms / {et:5d} runs  " + rate(em, et))
    lines.append(f"total time         = {t.get('total_ms', 0.0):10.2f} ms")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    t0 = time.perf_counter()
    try:
        from .llava import LlavaModel

        model = LlavaModel.load(args.model, args.mmproj, device=args.device, n_threads=args.threads,
                                n_ctx=args.ctx_size, template=args.chat_template, image_mode=args.image_mode)
        max_tokens = model.llm.n_ctx if args.n_predict < 0 else args.n_predict
        sampling = dict(temperature=args.temp, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                        repeat_penalty=args.repeat_penalty, repeat_last_n=args.repeat_last_n,
                        seed=None if args.seed < 0 else args.seed)
        if not args.no_display_prompt:
            shown = model.format_prompt(args.prompt, len(args.image), args.chat_template)
            sys.stdout.write(shown)
            sys.stdout.flush()
        for piece in model.generate(args.prompt, images=args.image, max_tokens=max_tokens, stream=True,
                                    template=args.chat_template, **sampling):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        sys.stdout.flush()
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted\n")
        return 130
    except (GGMLError, GGUFError, OSError, ValueError) as e:
        # GGMLError, GGUFError, ImageError, ContextFullError, ... : one clear line
        sys.stderr.write(f"ggml-llava: error: {e}\n")
        return 1
    model.timings["total_ms"] = (time.perf_counter() - t0) * 1e3
    sys.stderr.write(format_timings(model.timings, len(args.image)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ggml-llava command: llava-cli's flags, a streamed answer equal to the Python API's,
timings at the end, and one-line errors with exit status 1."""
import subprocess
import sys

import numpy as np
import pytest


from gguflite.convert import convert_llava  # noqa: E402
from tests.checkpoints import make_checkpoint  # noqa: E402

from ggml_bind import cli  # noqa: E402
from ggml_bind.llava import LlavaModel  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    fx = make_checkpoint("llava-1.5", root / "ck")
    llm, mm = convert_llava(fx.model_dir, vision_tower=fx.vision_tower, outdir=root / "out",
                            outtype="f16", progress=False)
    from PIL import Image

    img = root / "shapes.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((320, 240)).save(img)
    return llm, mm, img


def run(capsys, argv):
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_greedy_answer_is_streamed_and_equals_the_python_api(files, capsys):
    llm, mm, img = files
    code, out, err = run(capsys, ["-m", llm, "--mmproj", mm, "--image", img, "-p", "Describe the image.",
                                  "-n", "16", "--temp", "0", "-t", "2", "-c", "1024", "--no-display-prompt"])
    assert code == 0, err
    m = LlavaModel.load(llm, mm, n_threads=2, n_ctx=1024)
    expect = m.generate("Describe the image.", images=[img], max_tokens=16, temperature=0)
    assert out == expect + "\n"
    for what in ("load time", "image encode time", "prompt eval time", "eval time", "tokens per second"):
        assert what in err
    assert "images" in err and " 1 images" in err.replace("    ", " ")


def test_the_prompt_is_displayed_in_its_template_unless_asked_not_to(files, capsys):
    llm, mm, img = files
    code, out, err = run(capsys, ["-m", llm, "--mmproj", mm, "--image", img, "-p", "What is it?",
                                  "-n", "2", "--temp", "0", "-c", "1024"])
    assert code == 0, err
    assert out.startswith("A chat between a curious human") and "USER: <image>\nWhat is it? ASSISTANT:" in out


def test_sampling_flags_with_a_seed_are_reproducible(files, capsys):
    llm, mm, img = files
    argv = ["-m", llm, "--mmproj", mm, "--image", img, "-n", "8", "--temp", "1.0", "--top-k", "20",
            "--top-p", "0.9", "--seed", "42", "-c", "1024", "--no-display-prompt"]
    a = run(capsys, argv)
    b = run(capsys, argv)
    assert a[0] == b[0] == 0 and a[1] == b[1]


@pytest.mark.parametrize("bad", ["missing-image", "text-image", "missing-model", "context"])
def test_errors_are_one_line_with_exit_status_1(files, capsys, tmp_path, bad):
    llm, mm, img = files
    argv = ["-m", llm, "--mmproj", mm, "--image", img, "-n", "2", "--no-display-prompt", "-c", "1024"]
    if bad == "missing-image":
        argv[5] = tmp_path / "nope.jpg"
    elif bad == "text-image":
        (tmp_path / "x.jpg").write_text("hello")
        argv[5] = tmp_path / "x.jpg"
    elif bad == "missing-model":
        argv[1] = tmp_path / "nope.gguf"
    else:
        argv[-1] = "100"
    code, out, err = run(capsys, argv)
    assert code == 1
    assert err.startswith("ggml-llava: error: ") and err.count("\n") == 1
    assert "Traceback" not in err


def test_cuda_device_is_refused_clearly_without_a_gpu_build(files, capsys):
    from ggml_bind import has_cuda

    if has_cuda():
        pytest.skip("this build has CUDA; the refusal path is for CPU-only builds")
    llm, mm, img = files
    code, out, err = run(capsys, ["-m", llm, "--mmproj", mm, "--device", "cuda", "-n", "1", "-p", "hi"])
    assert code == 1 and "ggml-llava: error:" in err


def test_the_module_runs_as_a_program_and_has_help():
    out = subprocess.run([sys.executable, "-m", "ggml_bind.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for flag in ("-m", "--mmproj", "--image", "-p", "-n", "--temp", "--top-k", "--top-p", "--seed", "-t",
                 "--device", "--no-display-prompt"):
        assert flag in out.stdout

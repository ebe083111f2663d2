"""app.py, the search page: its functions, then the page itself in headless Chromium.

A tiny random student indexes a few clips of coloured noise; what the page shows is checked against
`VideoSearcher.query` on the same searcher (same ids, same order, same scores to the shown digits),
and the <video> it shows must serve the indexed file's bytes. Without chromium or the python
playwright package the browser test is skipped, except under CI=true, where it fails instead.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
QUERY = "a red ball rolls across the table"
TOP_K = 3
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def unavailable(reason: str):
    """Skip, or fail under CI=true, where chromium is installed and the page must really be tested."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the browser test must run, not be skipped)")
    pytest.skip(reason)


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def app():
    """app.py as a module (it sits at the repo root, outside the packages)."""
    if importlib.util.find_spec("gradio") is None:
        unavailable("gradio is not installed (pip install -e '.[app]')")
    spec = importlib.util.spec_from_file_location("mckd_app", REPO / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # gradio inspects the module of the functions it is given
    spec.loader.exec_module(module)
    return module


def write_noise_clip(path: Path, seed: int, frames: int = 6, size: int = 64) -> None:
    """An H.264 mp4 of coloured noise, different for every seed (so no two clips tie)."""
    import av

    rng = np.random.default_rng(seed)
    tint = rng.integers(0, 256, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        stream = container.add_stream(codec, rate=6)
        stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
        for _ in range(frames):
            noise = rng.integers(0, 256, (size, size, 3))
            image = ((noise + tint) // 2).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory) -> Path:
    import torch

    from modeling_mckd import (
        MCKDConfig,
        MCKDModel,
        MCKDProcessor,
        MCKDVideoProcessor,
        build_word_tokenizer,
    )
    from modeling_mckd.search import build_index

    root = tmp_path_factory.mktemp("app")
    tokenizer = build_word_tokenizer([QUERY, "a man is cooking", "a dog runs on the grass"], max_length=12)
    processor = MCKDProcessor(video_processor=MCKDVideoProcessor(num_frames=4, size=32, crop_size=32), tokenizer=tokenizer)
    config = MCKDConfig(
        vision_hidden_size=16, vision_num_layers=1, num_frames=4, text_hidden_size=16, vocab_size=len(tokenizer),
        max_text_length=12, projection_dim=16, temporal_num_heads=2, text_num_heads=2,
    )  # fmt: skip
    torch.manual_seed(0)
    MCKDModel(config).eval().save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    videos = root / "videos"
    for i in range(5):
        write_noise_clip(videos / f"clip{i}.mp4", seed=i)
    write_noise_clip(videos / "sub" / "clip5.mp4", seed=5)  # ids are paths relative to the folder
    report = build_index(str(root / "model"), videos, root / "index", batch_size=8, progress=False)
    assert report.num_videos == 6 and not report.failed
    return root / "index"


@pytest.fixture(scope="module")
def searcher(app, index_dir):
    return app.load_searcher(index_dir)


# ------------------------------------------------------------------------------------------ functions
def test_search_videos_is_the_api(app, searcher):
    expected = searcher.query(QUERY, k=TOP_K)
    assert app.search_videos(searcher, QUERY, TOP_K) == expected
    assert [hit.rank for hit in expected] == [1, 2, 3]
    assert app.search_videos(searcher, f"  {QUERY}\n", TOP_K) == expected  # stripped
    assert app.search_videos(searcher, "   ", TOP_K) == []
    assert len(app.search_videos(searcher, QUERY, 100)) == 6  # k is clamped to the index size
    assert len(app.search_videos(searcher, QUERY, 0)) == 1


def test_page_outputs_and_layout(app, searcher):
    hits = searcher.query(QUERY, k=2)
    status, *slots = app.page_outputs(searcher, QUERY, 2, slots=6)
    assert "2 of 6 videos" in status and QUERY in status
    assert len(slots) == 6
    for hit, update in zip(hits, slots):
        assert update["visible"] and update["value"]["path"] == hit.path
        assert update["label"] == f"{hit.rank}. {hit.video_id}  ·  score {hit.score:.4f}"
    assert all(not update["visible"] and update["value"] is None for update in slots[2:])
    status, *slots = app.page_outputs(searcher, "", 2, slots=6)
    assert "Type" in status and not any(update["visible"] for update in slots)

    demo = app.build_demo(searcher, top_k=TOP_K)
    assert demo.analytics_enabled is False and os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"
    slider = next(block for block in demo.blocks.values() if getattr(block, "elem_id", None) == "top-k")
    assert (slider.minimum, slider.maximum, slider.value) == (1, 6, TOP_K)  # no more slots than videos
    # the results skip gr.Video's postprocessing (ffprobe, re-encoding): the files are served as they are
    assert all(fn.postprocess is False for fn in demo.fns.values())


def clip_folder_with_traps(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    """A video folder with two real clips and what must never be served next to them."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    write_noise_clip(root / "plain.mp4", seed=1, size=32)
    write_noise_clip(root / "sub" / "nested.mp4", seed=2, size=32)
    write_noise_clip(outside / "private.mp4", seed=3, size=32)
    (root / ".env").write_text("HF_TOKEN=hf_secret_beside_the_clips\n")
    (root / "notes.txt").write_text("not a video\n")
    (root / "linked.mp4").symlink_to(outside / "private.mp4")  # a clip that resolves out of the root
    (root / "env.mp4").symlink_to(root / ".env")  # a video name for a non-video file: served only if a file
    return root, {"outside": outside / "private.mp4", "env": root / ".env", "notes": root / "notes.txt",
                  "linked": root / "linked.mp4"}


def test_served_files_are_exactly_the_clips_inside_the_root(app, searcher, tmp_path):
    root, traps = clip_folder_with_traps(tmp_path)
    ids = ["linked.mp4", "notes.txt", "plain.mp4", "sub/nested.mp4"]
    index = type(searcher.index)(np.eye(4, dtype=np.float32), ids, root)
    # files, never a folder; the symlink out of the root and the non-video file are left out
    assert app.served_files(index) == [str((root / "plain.mp4").resolve()), str((root / "sub" / "nested.mp4").resolve())]
    # a traversal id cannot even make an index
    from modeling_mckd.search import IndexError_

    for bad in ("../outside/private.mp4", "/etc/passwd", "sub/../../x.mp4", "a\\..\\b.mp4"):
        with pytest.raises(IndexError_, match="video id"):
            type(searcher.index)(np.eye(1, dtype=np.float32), [bad], root)


def test_http_serves_only_the_indexed_clips(app, searcher, tmp_path):
    """The page's file route: 200 for an indexed clip, 403 for every other path (gradio's own check)."""
    root, traps = clip_folder_with_traps(tmp_path)
    ids = ["env.mp4", "linked.mp4", "plain.mp4"]
    index = type(searcher.index)(np.eye(3, 16, dtype=np.float32), ids, root)
    demo = app.build_demo(type(searcher)(searcher.model, searcher.processor, index), top_k=2)
    port = free_port()
    base = f"http://127.0.0.1:{port}/gradio_api/file="
    try:
        app.launch(demo, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)

        def status(path) -> tuple[int, bytes]:
            try:
                with urllib.request.urlopen(base + str(path), timeout=10) as response:
                    return response.status, response.read()
            except urllib.error.HTTPError as error:
                return error.code, error.read()

        code, body = status(root / "plain.mp4")
        assert code == 200 and body == (root / "plain.mp4").read_bytes()
        for path in (traps["env"], root / "env.mp4", traps["notes"], traps["linked"], traps["outside"], root,
                     root / "sub", Path("/etc/passwd"), root / ".." / "outside" / "private.mp4"):
            code, body = status(path)
            assert code == 403, (path, code)
            assert b"hf_secret" not in body
    finally:
        demo.close()


def test_missing_index_is_a_clear_error(app, tmp_path, monkeypatch, capsys):
    with pytest.raises(app.IndexNotFoundError, match="no index given.*search.py index"):
        app.check_index(None)
    with pytest.raises(app.IndexNotFoundError, match="does not exist.*search.py index"):
        app.check_index(tmp_path / "nowhere")
    with pytest.raises(app.IndexNotFoundError, match="not an index"):
        app.check_index(tmp_path)
    with pytest.raises(SystemExit, match="nowhere.*does not exist"):
        app.main(["--index", str(tmp_path / "nowhere")])
    monkeypatch.delenv("MCKD_INDEX", raising=False)
    with pytest.raises(SystemExit, match="no index given"):
        app.main([])


def test_configuration_from_environment(app, monkeypatch):
    # Spaces: no arguments, the settings come from variables (GRADIO_SERVER_* are set by Spaces itself)
    monkeypatch.setenv("MCKD_INDEX", "/data/index")
    monkeypatch.setenv("MCKD_MODEL", "/data/model")
    monkeypatch.setenv("MCKD_TOP_K", "8")
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7861")
    args = app.parse_args([])
    assert (args.index, args.model, args.top_k, args.host, args.port) == ("/data/index", "/data/model", 8, "0.0.0.0", 7861)
    args = app.parse_args(["--index", "i", "--model", "m", "--top_k", "2", "--host", "127.0.0.1", "--port", "9000"])
    assert (args.index, args.model, args.top_k, args.host, args.port) == ("i", "m", 2, "127.0.0.1", 9000)


# ------------------------------------------------------------------------------------------ browser
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(app, searcher):
    """The page served by a thread of this process: the test's searcher is the page's searcher."""
    chromium = find_chromium()
    if chromium is None:
        unavailable("chromium is not installed (apt-get install chromium)")
    if importlib.util.find_spec("playwright") is None:
        unavailable("the python package playwright is not installed (pip install playwright)")
    demo = app.build_demo(searcher, top_k=TOP_K)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    try:
        app.launch(demo, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
        deadline = time.monotonic() + 30
        while True:  # launch() normally returns once the server answers; bounded wait all the same
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield url, chromium
    finally:
        demo.close()


@pytest.fixture
def page(server, tmp_path):
    from playwright.sync_api import sync_playwright

    url, chromium = server
    with sync_playwright() as playwright:
        # a fresh profile; the flags keep Chromium itself off the network
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=chromium, headless=True, args=CHROMIUM_ARGS, timeout=30_000
        )
        try:
            page = context.new_page()
            page.set_default_timeout(20_000)
            page.elsewhere = []  # every request the page makes that does not go to the app
            page.on("request", lambda r: None if r.url.startswith((url, "data:", "blob:")) else page.elsewhere.append(r.url))
            page.goto(url)
            yield page, url
        finally:
            context.close()


def test_page_shows_the_api_results_as_served_videos(page, searcher, monkeypatch):
    import gradio as gr

    def no_postprocessing(self, value):
        if value is not None:  # None: gradio re-creating an emptied slot
            raise AssertionError(f"gr.Video.postprocess ran on {value!r} (it may call ffprobe and ffmpeg)")

    monkeypatch.setattr(gr.Video, "postprocess", no_postprocessing)  # the server is a thread of this process
    page, url = page
    expected = searcher.query(QUERY, k=TOP_K + 1)
    assert len({round(hit.score, 4) for hit in expected}) > 1  # scores that tell the clips apart

    page.locator("#top-k input[type=number]").fill(str(TOP_K + 1))  # k from the slider, not the default
    page.locator("#top-k input[type=number]").press("Enter")
    page.locator("#query textarea").fill(QUERY)
    page.locator("#query textarea").press("Enter")
    page.locator(f"#result-{TOP_K} video").wait_for()
    assert "4 of 6 videos" in page.locator("#status").inner_text()

    for slot, hit in enumerate(expected):
        label = page.locator(f"#result-{slot}").inner_text()
        assert f"{hit.rank}. {hit.video_id}" in label and f"score {hit.score:.4f}" in label, (slot, label)
    assert not page.locator(f"#result-{len(expected)}").is_visible()

    # the first video is served from the app and is the indexed file, byte for byte
    video = page.locator("#result-0 video")
    src = video.get_attribute("src")
    assert src and src.startswith(url) and "/file=" in src, src
    response = page.request.get(src)
    assert response.ok and response.body() == Path(expected[0].path).read_bytes()
    assert response.body()[4:8] == b"ftyp"
    # and Chromium can read it: its duration is known once the metadata is decoded
    video.evaluate(
        "v => new Promise((done, fail) => { if (v.readyState >= 1) return done();"
        " v.addEventListener('loadedmetadata', () => done());"
        " setTimeout(() => fail(new Error('no metadata after 10 s')), 10000); })"
    )
    assert video.evaluate("v => v.duration") > 0
    assert page.elsewhere == []  # no font, script or analytics from the internet

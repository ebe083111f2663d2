"""Web page for text-to-video search: type a sentence, get the top-k clips of an index as videos.

    python app.py --index INDEX [--model DIR] [--top_k 5] [--host 127.0.0.1] [--port 7860]
    mckd-app --index INDEX ...                  # the same, installed (modeling_mckd.cli.app_main)

INDEX is a folder written by `python search.py index` (see docs/search.md); the model defaults to the
one the index records. On Hugging Face Spaces, where there are no command-line arguments, set the
variables MCKD_INDEX and MCKD_MODEL (and optionally MCKD_TOP_K); Spaces' own GRADIO_SERVER_NAME and
GRADIO_SERVER_PORT give the default host and port.

The page makes no call to the internet: analytics (and gradio's version check, which comes with them)
are off, there is no share link, and the theme uses the browser's system fonts.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import sys
import time
from pathlib import Path

# Before gradio is imported, so that no part of it sends analytics or asks the internet for a newer version.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import gradio as gr
from gradio.data_classes import FileData

logger = logging.getLogger("app")

DEFAULT_TOP_K = 5
MAX_TOP_K = 20  # number of video slots on the page, i.e. the slider's upper end
SCORE_DIGITS = 4  # scores are shown with this many decimals
THEME = gr.themes.Default(
    font=["ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "Helvetica", "Arial", "sans-serif"],
    font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"],
)
# Equal-width cells for the results, however many of them are visible (a Row stretches the last line).
CSS = "#results { display: grid !important; grid-template-columns: repeat(auto-fill, minmax(240px, 1fr)); }"
# gradio 6 takes theme and css in launch(), gradio 5 in Blocks().
_STYLE_AT_LAUNCH = "theme" in inspect.signature(gr.Blocks.launch).parameters


class IndexNotFoundError(FileNotFoundError):
    """The folder given as the index does not hold an index written by `search.py index`."""


def served_video(hit) -> dict:
    """A result slot's update: the clip as a file for gradio to serve untouched, captioned by `hit_label`.

    The value is already in gradio's wire form because the events run with postprocess=False:
    gr.Video's own postprocessing probes every file with ffprobe and re-encodes what it takes for
    unplayable, with an ffmpeg binary that may not be installed (and slowly). The indexed clips are
    served as they are (the synthetic ones are H.264 mp4).
    """
    video = FileData(path=str(hit.path), orig_name=Path(hit.path).name)
    return gr.update(value=video.model_dump(), label=hit_label(hit), visible=True)


def served_files(index) -> list[str]:
    """The exact files gradio may serve (its `allowed_paths`): each indexed clip's real path, never a folder.

    A clip is served only when it is a video file that resolves inside the index's video folder
    (`VideoIndex.video_file`): a symlink out of the folder, or any other file beside the clips (a
    `.env`, notes), stays unreachable. gradio resolves each request's path before comparing it.
    """
    files = []
    for video_id in index.ids:
        path = index.video_file(video_id)
        if path is None:
            logger.warning("not serving %r: not a video file inside %s", video_id, index.video_root)
        else:
            files.append(str(path))
    return sorted(set(files))


def check_index(index: str | os.PathLike | None) -> Path:
    """The index folder as a Path, or an IndexNotFoundError that says how to make one."""
    how = "build one with `python search.py index` (docs/search.md), then pass --index or set MCKD_INDEX"
    if not index:
        raise IndexNotFoundError(f"no index given: {how}")
    path = Path(index).expanduser()
    if not path.is_dir():
        raise IndexNotFoundError(f"index folder {path} does not exist: {how}")
    if not (path / "index.json").is_file():
        raise IndexNotFoundError(f"{path} is not an index (it has no index.json): {how}")
    return path


def load_searcher(index: str | os.PathLike | None, model: str | None = None, device: str = "cpu"):
    """A `VideoSearcher` over `index` (with `model`, else the index's own), after checking the folder."""
    from modeling_mckd.search import VideoSearcher

    return VideoSearcher.from_index(check_index(index), model=model or None, device=device)


def search_videos(searcher, query: str, k: int) -> list:
    """The top-k `SearchHit`s for `query`, exactly as `searcher.query` ranks them; [] for a blank query."""
    query = (query or "").strip()
    if not query:
        return []
    k = max(1, min(int(k), len(searcher.index)))
    return searcher.query(query, k=k)


def hit_label(hit) -> str:
    """The caption drawn over a result: rank, video id and cosine score."""
    return f"{hit.rank}. {hit.video_id}  ·  score {hit.score:.{SCORE_DIGITS}f}"


def page_outputs(searcher, query: str, k: int, slots: int, served: set[str] | None = None) -> list:
    """What a search puts on the page: the status line, then one update per video slot (hits first).

    With `served` (the `served_files` of the index), a hit whose clip is not among them is left out
    and counted in the status line instead of being offered to the browser.
    """
    start = time.perf_counter()
    hits = search_videos(searcher, query, k)
    seconds = time.perf_counter() - start
    withheld = 0
    if served is not None:
        kept = [hit for hit in hits if _real_path(hit.path) in served]
        withheld, hits = len(hits) - len(kept), kept
    if not (query or "").strip():
        status = "Type a description of the video you are looking for and press Enter."
    else:
        status = f"{len(hits)} of {len(searcher.index)} videos for “{query.strip()}” ({seconds * 1000:.0f} ms)"
        if withheld:
            status += f"; {withheld} not shown (not a video file inside the indexed folder)"
    shown = [served_video(hit) for hit in hits]
    hidden = [gr.update(value=None, visible=False) for _ in range(slots - len(hits))]
    return [status, *shown, *hidden]


def _real_path(path: str) -> str:
    return str(Path(path).resolve())


def build_demo(searcher, top_k: int = DEFAULT_TOP_K) -> gr.Blocks:
    """The page (not launched) for `searcher`; the k slider starts at `top_k`."""
    size = len(searcher.index)
    slots = max(1, min(max(MAX_TOP_K, top_k), size))
    top_k = max(1, min(top_k, slots))

    served = set(served_files(searcher.index))

    def run(query: str, k: int):
        return page_outputs(searcher, query, k, slots, served)

    style = {} if _STYLE_AT_LAUNCH else {"theme": THEME, "css": CSS}
    with gr.Blocks(title="MCKD video search", analytics_enabled=False, **style) as demo:
        gr.Markdown(
            f"## Text-to-video search\n{size} videos indexed, model `{searcher.index.model}`. "
            "Scores are cosine similarities between the sentence and each video."
            + (f"\n\n**Warning:** {searcher.index.incomplete_message()}." if not searcher.index.complete else "")
        )
        with gr.Row(equal_height=True):
            query = gr.Textbox(
                label="Query", placeholder="a man is cooking in a kitchen", elem_id="query", scale=4, autofocus=True
            )
            k = gr.Slider(1, slots, value=top_k, step=1, label="Results (k)", elem_id="top-k", scale=1)
            button = gr.Button("Search", variant="primary", elem_id="search", scale=0, min_width=120)
        status = gr.Markdown(elem_id="status")
        with gr.Row(elem_id="results"):
            videos = [
                gr.Video(visible=False, interactive=False, elem_id=f"result-{i}", min_width=240, height=240)
                for i in range(slots)
            ]
        outputs = [status, *videos]
        for event in (query.submit, button.click, k.release):
            event(run, [query, k], outputs, postprocess=False)  # see served_video
    demo.searcher = searcher  # for callers that want the API next to the page (tests)
    demo.served_files = sorted(served)
    return demo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", default=env.get("MCKD_INDEX"), help="index folder from `search.py index` [MCKD_INDEX]")
    parser.add_argument("--model", default=env.get("MCKD_MODEL"), help="model folder or hub id [MCKD_MODEL; default: the index's]")
    parser.add_argument("--top_k", type=int, default=int(env.get("MCKD_TOP_K", DEFAULT_TOP_K)), help="initial k (default 5)")
    parser.add_argument("--device", default=env.get("MCKD_DEVICE", "cpu"))
    # Spaces sets GRADIO_SERVER_NAME=0.0.0.0; an explicit 127.0.0.1 default would shadow it.
    parser.add_argument("--host", default=env.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env.get("GRADIO_SERVER_PORT", 7860)))
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error("--top_k must be at least 1")
    return args


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, **kwargs):
    """Launch `demo` offline (no share link), serving the index's videos besides gradio's own files."""
    style = {"theme": THEME, "css": CSS} if _STYLE_AT_LAUNCH else {}
    return demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        allowed_paths=demo.served_files,  # exact files, never a folder (see served_files)
        show_error=True,
        **style,
        **kwargs,
    )


def _program() -> str:
    """`app.py` or `mckd-app`, as the user typed it, for error messages."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return name if name.endswith(".py") or name.startswith("mckd-") else "app.py"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        check_index(args.index)  # before torch is imported, so that a missing index fails fast
    except IndexNotFoundError as error:
        sys.exit(f"{_program()}: {error}")
    from modeling_mckd.search import IndexError_

    try:
        searcher = load_searcher(args.index, args.model, device=args.device)
    except IndexError_ as error:  # a broken or tampered index, a missing or mismatched model
        sys.exit(f"{_program()}: {error}")
    launch(build_demo(searcher, args.top_k), host=args.host, port=args.port)


if __name__ == "__main__":
    main()

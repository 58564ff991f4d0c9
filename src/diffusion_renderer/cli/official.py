"""The official scripts' flags, translated to this CLI, so the official README commands run as they are.

``python .../inference_inverse_renderer.py FLAGS`` becomes ``diffusion-renderer inverse FLAGS`` (or
``diffusion-renderer inference_inverse_renderer FLAGS``); likewise ``inference_forward_renderer`` ->
``forward`` and ``dataproc_extract_frames_from_video`` -> ``extract-frames``. Flags the official code
parses but never uses are accepted and dropped. The README lists the mapping.
"""

from __future__ import annotations

from collections.abc import Sequence

COMMAND_ALIASES = {
    "inference_inverse_renderer": "inverse",
    "inference_inverse_renderer.py": "inverse",
    "inference_forward_renderer": "forward",
    "inference_forward_renderer.py": "forward",
    "dataproc_extract_frames_from_video": "extract-frames",
    "dataproc_extract_frames_from_video.py": "extract-frames",
}

RENDER_COMMANDS = ("inverse", "forward", "relight", "extract-frames")
# official flag -> our flag (same values)
RENAMED = {
    "--checkpoint_dir": "--model",
    "--video_save_folder": "--out",
    "--output_folder": "--out",
    "--num_video_frames": "--frames",
    "--group_mode": "--group-mode",
    "--inference_passes": "--passes",
    "--envlight_ind": "--envmap",
    "--num_steps": "--steps",
    "--chunk_mode": "--chunk-mode",
    "--frame_rate": "--fps",
    "--max_frames": "--max-frames",
}
# official flag whose value(s) are the command's inputs
POSITIONAL = ("--dataset_path", "--input_folder")
# official booleans (str2bool) -> our switch when true / when false
BOOLEANS = {
    "--rotate_light": ("--rotate-light", None),
    "--use_custom_envmap": (None, "--random-lighting"),
    "--save_video": (None, "--no-video"),
    "--normalize_normal": ("--normalize-normal", None),
    "--use_fixed_frame_ind": ("--fixed-frame", None),  # with --fixed_frame_ind (default 0)
    "--save_image": (None, None),  # frames are always written (the forward pass reads them back)
}
SWITCHES = {"--offload_diffusion_transformer": "--offload", "--offload_tokenizer": "--offload"}
# parsed by the official scripts but without effect there (or replaced by this package's own handling)
IGNORED_WITH_VALUE = (
    "--diffusion_transformer_dir",
    "--tokenizer_dir",
    "--video_save_name",
    "--prompt",
    "--batch_input_path",
    "--negative_prompt",
    "--num_gpus",
    "--resize_resolution",
    "--overlap_n_frames",
    "--image_extensions",
)
IGNORED_SWITCHES = (
    "--disable_prompt_upsampler",
    "--offload_text_encoder_model",
    "--offload_prompt_upsampler",
    "--offload_guardrail_models",
    "--disable_guardrail",
)
TAKES_VALUES = {*RENAMED, *POSITIONAL, *BOOLEANS, *IGNORED_WITH_VALUE, "--height", "--width", "--fixed_frame_ind"}
TRUE, FALSE = ("yes", "true", "t", "y", "1"), ("no", "false", "f", "n", "0")


def _split(argv: Sequence[str]) -> list[str]:
    """``--flag=value`` -> ``--flag value`` for official (underscore) flags."""
    out: list[str] = []
    for arg in argv:
        if arg.startswith("--") and "=" in arg and "_" in arg.split("=", 1)[0]:
            out.extend(arg.split("=", 1))
        else:
            out.append(arg)
    return out


def _values(args: list[str], i: int) -> tuple[list[str], int]:
    """The values after flag ``args[i]`` (up to the next flag); returns them and the next index."""
    j = i + 1
    while j < len(args) and not (args[j].startswith("--") and len(args[j]) > 2):
        j += 1
    return args[i + 1 : j], j


def _bool(flag: str, values: list[str]) -> bool:
    if not values:
        return True
    word = values[0].lower()
    if word in TRUE:
        return True
    if word in FALSE:
        return False
    raise ValueError(f"{flag}: expected a boolean (true/false), got {values[0]!r}")


def translate(argv: Sequence[str]) -> list[str]:
    """Rewrite official command names and flags into this CLI's; other arguments pass through unchanged."""
    args = list(argv)
    if args and args[0] in COMMAND_ALIASES:
        args[0] = COMMAND_ALIASES[args[0]]
    if not args or args[0] not in RENDER_COMMANDS:
        return args  # the package's own commands (check-model has its own --height / --width)
    args = _split(args)
    out: list[str] = args[:1]
    positional: list[str] = []
    height = width = None
    fixed_frame, use_fixed = "0", False
    i = 1
    while i < len(args):
        flag = args[i]
        if flag in TAKES_VALUES:
            values, i = _values(args, i)
        else:
            values, i = [], i + 1
        if flag in RENAMED:
            out += [RENAMED[flag], *values]
        elif flag in POSITIONAL:
            positional += values
        elif flag == "--use_fixed_frame_ind":
            use_fixed = _bool(flag, values)
        elif flag in BOOLEANS:
            on, off = BOOLEANS[flag]
            switch = on if _bool(flag, values) else off
            out += [switch] if switch else []
        elif flag in SWITCHES:
            out += [SWITCHES[flag], "model"] if "--offload" not in out else []
        elif flag == "--height":
            height = values[0] if values else None
        elif flag == "--width":
            width = values[0] if values else None
        elif flag == "--fixed_frame_ind":
            fixed_frame = values[0] if values else "0"
        elif flag in IGNORED_WITH_VALUE or flag in IGNORED_SWITCHES:
            pass
        else:
            out.append(flag)
    if use_fixed:
        out += ["--fixed-frame", fixed_frame]
    if height is not None or width is not None:
        out += ["--resolution", height or "704", width or "1280"]
    return out[:1] + positional + out[1:]

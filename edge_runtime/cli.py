"""The `edge-seg` command line: one entry point; heavy commands import their package lazily.

Longer than ~400 lines on purpose: it holds only the option declarations of every command, in one
place so that one vocabulary (-o/--output, --json, --seed N, --threads) can be read and kept; each
command's body lives in its own package.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from edge_runtime import __version__
from edge_runtime.cutoffs import ABSOLUTE_STENOSIS_MM2, RELATIVE_STENOSIS_MM2

app = typer.Typer(
    name="edge-seg",
    help=(
        "Lumbar-spine MRI segmentation (IVD, PE, TS, AAP) from GPU workstation to scanner-side box.\n\n"
        "Edge box: `edge-seg run SLICES/ -o OUT`. Workstation: synth -> train -> optimize -> export -> bench."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # click's plain help: rich panels cost --help ~0.2 s of imports (typer.rich_utils)
)
bench_app = typer.Typer(help="Accuracy and latency benchmarks of every exported variant.", no_args_is_help=True,
                        rich_markup_mode=None)
app.add_typer(bench_app, name="bench")

err = Console(stderr=True, soft_wrap=True)

_SINGLE_WINDOW_HELP = (
    "See each slice through the model's own field of view only (a third of the inference), not also through "
    "windows 1/16 smaller and larger whose probabilities are averaged (more accurate; the default)."
)

# Modules whose absence means an optional extra is missing, and the extra that provides them.
_EXTRA_FOR_MODULE = {
    "tensorflow": "train",
    "tf_keras": "train",
    "tensorflow_model_optimization": "train",
    "tf2onnx": "train",
    "onnx": "train",
    "matplotlib": "train",
    "onnxruntime": "onnx",
    "highdicom": "dicom-seg",
    "pynetdicom": "node",
}


def _exit_for_missing_extra(exc: ImportError) -> None:
    """Exit 2 with a one-line install hint when `exc` is a missing optional extra; else re-raise."""
    missing = (exc.name or "").split(".")[0]
    extra = _EXTRA_FOR_MODULE.get(missing)
    if extra is None:
        raise exc
    err.print(
        f"[red]error:[/] this command needs the '{extra}' extra ({missing} is not installed): "
        + escape(f"pip install 'edge-seg[{extra}]'")
    )
    raise typer.Exit(2) from None


# Commands that evaluate the Keras float baseline in-process whenever TensorFlow is installed.
_KERAS_BASELINE_MODULES = ("benchmarks.accuracy_cli", "benchmarks.report")


def require_extra(extra: str) -> None:
    """Exit 2 with the install hint, before the command writes anything, when `extra` is not installed."""
    import importlib.util

    for name, provider in _EXTRA_FOR_MODULE.items():
        if provider == extra and importlib.util.find_spec(name) is None:
            _exit_for_missing_extra(ModuleNotFoundError(f"No module named {name!r}", name=name))


def load_command(module: str, attr: str, needs: str | None = None) -> Callable[..., Any]:
    """Import `module.attr` for a command; a missing optional extra exits 2 with a one-line hint.

    `needs` names an extra the command cannot start without: it is checked before anything
    runs, so no command writes files and then fails on a missing package. The hint is also
    given when an extra is imported when the module loads or later, inside the command.
    TensorFlow, when installed, is imported first with its start-up lines sent to
    tensorflow.log in the user cache folder.
    """
    from edge_runtime.user_cache import cache_dir

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    if needs is not None:
        require_extra(needs)
    if needs == "train" or module in _KERAS_BASELINE_MODULES:
        from train.quiet_tf import import_tensorflow_quietly

        import_tensorflow_quietly(cache_dir() / "tensorflow.log")
    try:
        function = getattr(importlib.import_module(module), attr)
    except ImportError as exc:
        _exit_for_missing_extra(exc)

    def call(**kwargs: Any) -> Any:
        try:
            return function(**kwargs)
        except ImportError as exc:
            _exit_for_missing_extra(exc)

    return call


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"edge-seg {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Show the version.")
    ] = False,
    quiet: Annotated[
        bool, typer.Option("-q", "--quiet", help="No progress bars on stderr (results, errors and warnings still print).")
    ] = False,
) -> None:
    """edge-seg: lumbar-spine MRI segmentation for the edge."""
    if quiet:  # else leave $EDGE_SEG_QUIET as the caller set it
        from edge_runtime.progress import set_quiet

        set_quiet(True)


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write the data set into (Mendeley layout).")],
    patients: Annotated[int, typer.Option(min=1, help="Number of synthetic patients (3 disc levels each).")] = 20,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed writes the same bytes.")] = 0,
    dicom: Annotated[bool, typer.Option(help="Also write one axial T2 DICOM study per patient.")] = False,
    preview: Annotated[bool, typer.Option(help="Write preview.png, a contact sheet with label overlays.")] = False,
    off_disc: Annotated[
        bool, typer.Option(help="Also label an end-plate and a pedicle slice per level (beyond the real layout).")
    ] = False,
    randomize: Annotated[
        bool,
        typer.Option(help="Domain randomisation: random tissue intensities (T1-like, T2-like, random), deformation, "
                     "bias fall-off, blur and noise per image, for models that must work on real scans."),
    ] = False,
    workers: Annotated[int, typer.Option(min=1, help="Processes rendering patients in parallel (same bytes).")] = 1,
) -> None:
    """Write a synthetic axial lumbar-spine MRI data set with exact ground truth (no TensorFlow needed)."""
    from edge_runtime.progress import progress_bar

    synthesize = load_command("train.data.synth", "synthesize")
    try:
        with progress_bar("synthesising patients", total=patients) as advance:
            summary = synthesize(
                out=out,
                patients=patients,
                seed=seed,
                dicom=dicom,
                preview=preview,
                off_disc=off_disc,
                randomize=randomize,
                workers=workers,
                progress=lambda done, total: advance(done),
            )
    except (ValueError, OSError) as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    shares = ", ".join(f"{name} {100 * share:.1f}%" for name, share in summary.class_pixel_share.items())
    err.print(
        f"wrote {summary.n_slices} labelled slices ({summary.n_rendered} rendered, {summary.n_dicom} DICOM) "
        f"of {summary.n_patients} patients to {out} in {summary.seconds:.1f} s "
        f"({summary.slices_per_second:.1f} rendered slices/s); class pixel shares: {shares}"
    )


@app.command()
def train(
    data: Annotated[Path, typer.Option(help="Data set folder in the Mendeley layout (real or synthetic).")],
    out: Annotated[
        Path, typer.Option("-o", "--output", "--out", help="Run folder for the model, config, logs, metrics and plots.")
    ],
    arch: Annotated[str, typer.Option(help="Architecture: unet or resunet.")] = "unet",
    encoder: Annotated[str, typer.Option(help="resunet encoder: resnet18 or resnet34.")] = "resnet18",
    epochs: Annotated[int, typer.Option(min=1, help="Maximum epochs (early stopping may end sooner).")] = 60,
    batch_size: Annotated[int, typer.Option(min=1, help="Global batch size (split across GPUs).")] = 8,
    image_size: Annotated[int, typer.Option(help="Model input side in pixels (divisible by 2**depth).")] = 160,
    base_filters: Annotated[int, typer.Option(min=1, help="Filters of the first stage.")] = 16,
    lr: Annotated[float, typer.Option(help="Peak learning rate (Adam, cosine decay).")] = 2e-3,
    seed: Annotated[int, typer.Option(help="Seed for split, initialisation and augmentation.")] = 0,
    modality: Annotated[str, typer.Option(help="Contrast to train on: T1, T2 or both.")] = "T2",
    resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint in --out.")] = False,
    time_budget: Annotated[float | None, typer.Option(help="Stop after this many minutes (keeps the best checkpoint).")] = None,
    class_weights: Annotated[
        str | None, typer.Option(help="Loss weight per class, BG,IVD,PE,TS,AAP (e.g. 1,1,1,2,1); default all 1.")
    ] = None,
    field_of_view_mm: Annotated[
        float | None,
        typer.Option(help="The model sees a centred square of this many mm (needs pixel spacing at run time); "
                     "default: the whole slice."),
    ] = None,
    init_from: Annotated[
        Path | None, typer.Option(help="Start from this run folder's weights (same architecture): fine-tuning.")
    ] = None,
) -> None:
    """Train a U-Net or ResNet-U-Net (needs the 'train' extra)."""
    command = load_command("train.fit", "train_command", needs="train")
    command(
        data=data,
        out=out,
        arch=arch,
        encoder=encoder,
        epochs=epochs,
        batch_size=batch_size,
        image_size=image_size,
        base_filters=base_filters,
        lr=lr,
        seed=seed,
        modality=modality,
        resume=resume,
        time_budget=time_budget,
        class_weights=class_weights,
        field_of_view_mm=field_of_view_mm,
        init_from=init_from,
    )


@app.command()
def evaluate(
    model: Annotated[Path, typer.Argument(help="A .keras model, a run folder, or an exported .tflite/.onnx.")],
    data: Annotated[Path, typer.Option(help="Data set folder in the Mendeley layout.")],
    split: Annotated[str, typer.Option(help="Which split to evaluate: train, val or test.")] = "test",
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Also write the scores as JSON to this file.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the scores as JSON instead of a table.")] = False,
    modality: Annotated[str, typer.Option(help="T1, T2 or both.")] = "T2",
    threads: Annotated[int | None, typer.Option(help="Threads for exported models.")] = None,
    single_window: Annotated[bool, typer.Option(help=_SINGLE_WINDOW_HELP)] = False,
) -> None:
    """Per-class Dice and IoU of a model on held-out patients, the slices seen as `edge-seg run` sees them."""
    command = load_command("train.evaluate", "evaluate_command")
    command(model=model, data=data, split=split, output=output, json_output=json_output, modality=modality, threads=threads,
            single_window=single_window)


@app.command()
def optimize(
    run_dir: Annotated[Path, typer.Argument(help="Training run folder (from `edge-seg train`).")],
    out: Annotated[Path, typer.Option("-o", "--output", "--out", help="Folder for the optimised run.")],
    prune: Annotated[float | None, typer.Option(help="Target sparsity 0-1 (magnitude pruning).")] = None,
    qat: Annotated[bool, typer.Option(help="Quantisation-aware training (pruning-preserving if --prune).")] = False,
    epochs: Annotated[int, typer.Option(min=1, help="Fine-tuning epochs.")] = 4,
    data: Annotated[Path | None, typer.Option(help="Data folder (default: the run's).")] = None,
    recover_epochs: Annotated[
        int,
        typer.Option(min=0, help="With --prune: up to this many more epochs at full sparsity, stopped once the "
                     "validation Dice drop is within the pruned gate (0.02)."),
    ] = 0,
) -> None:
    """Prune and/or quantisation-aware-train a trained model (needs the 'train' extra)."""
    command = load_command("export.optimize", "optimize_command", needs="train")
    command(run_dir=run_dir, out=out, prune=prune, qat=qat, epochs=epochs, data=data, recover_epochs=recover_epochs)


@app.command("export")
def export_(
    model_or_run: Annotated[Path, typer.Argument(help="A .keras model or a run folder.")],
    out: Annotated[
        Path, typer.Option("-o", "--output", "--out", help="Folder for the artefacts and their manifests.")
    ],
    formats: Annotated[
        str,
        typer.Option(help="Comma list: tflite-fp32, tflite-fp16, tflite-dynamic, tflite-int8, onnx-fp32, onnx-int8, or all."),
    ] = "all",
    calibration_data: Annotated[Path | None, typer.Option(help="Data folder for int8 calibration (training split only).")] = None,
    calibration_samples: Annotated[
        int | None,
        typer.Option(min=1, help="Calibration slices (default: 64, or all the training split has; at least 8)."),
    ] = None,
) -> None:
    """Export TFLite and ONNX artefacts with manifests, and gate each one (needs 'train').

    Exit status: 0 every artefact passed its gate, 1 one failed (no file of its name is left), 2 bad input.
    """
    command = load_command("export.command", "export_command", needs="train")
    command(
        model_or_run=model_or_run,
        out=out,
        formats=formats,
        calibration_data=calibration_data,
        calibration_samples=calibration_samples,
    )


@app.command()
def run(
    input: Annotated[Path | None, typer.Argument(help="DICOM folder tree, a single file, or PNG/NPY slices.")] = None,
    input_option: Annotated[
        Path | None, typer.Option("-i", "--input", help="The same as INPUT, as an option (give one of the two).")
    ] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Output folder (never inside INPUT).")] = Path("edge-seg-out"),
    model: Annotated[Path | None, typer.Option(help="Model file (.tflite/.onnx) with manifest; default: bundled.")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="Inference threads (default: all cores).")] = None,
    backend: Annotated[
        str,
        typer.Option(help="auto (the fastest installed backend, measured once per model, CPU and thread count, "
                     "and cached), litert, tflite-runtime, openvino or onnxruntime."),
    ] = "auto",
    format: Annotated[
        str,
        typer.Option(help="Comma list of outputs: png,npy,overlay,seg,sr (TID 1500 SR),summary (key-image sheet),report "
                     "(or all). seg, sr and the summary's DICOM need highdicom."),
    ] = "png,npy,overlay,seg,sr,summary,report",
    series: Annotated[
        str | None,
        typer.Option(
            help="Pick series by description or folder substring, or by SeriesInstanceUID, whatever their modality "
            "and image type (slices in the series' main plane)."
        ),
    ] = None,
    rules: Annotated[
        Path | None,
        typer.Option(
            help='JSON selection rules replacing the defaults {"modalities": ["MR"], "planes": ["axial"], '
            '"exclude_image_types": ["LOCALIZER", "DERIVED", "SECONDARY"], "series": null}.'
        ),
    ] = None,
    truth: Annotated[Path | None, typer.Option(help="Folder of label PNGs (same stems) to score Dice/IoU against.")] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace existing outputs: afterwards the folder holds exactly this run's files.")
    ] = False,
    ts_relative: Annotated[float, typer.Option(help="Sac area (mm2) below which stenosis is relative.")] = RELATIVE_STENOSIS_MM2,
    ts_absolute: Annotated[float, typer.Option(help="Sac area (mm2) below which stenosis is absolute.")] = ABSOLUTE_STENOSIS_MM2,
    batch_size: Annotated[int, typer.Option(min=1, help="Slices per inference call (models with a free batch).")] = 8,
    pixel_spacing: Annotated[
        float | None,
        typer.Option(help="mm per pixel of PNG/NPY slices (DICOM carries its own): areas in mm2, and needed by a "
                     "model that sees a fixed field of view, as the bundled one does."),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON instead of a table.")] = False,
    single_window: Annotated[bool, typer.Option(help=_SINGLE_WINDOW_HELP)] = False,
) -> None:
    """Segment a study on this machine: masks, overlays, report and DICOM SEG (no TensorFlow).

    Exit status: 0 all selected slices processed, 1 some inputs failed (the rest is written), 2 usage, model or
    output-folder error, or the output folder is in use by another run.
    """
    if (input is None) == (input_option is None):
        err.print("[red]error:[/] give the input once: as INPUT or as -i/--input")
        raise typer.Exit(2)
    command = load_command("edge_runtime.run", "run_command")
    _fewer_collections()
    status = command(
        input=input if input is not None else input_option,
        output=output,
        model=model,
        threads=threads,
        backend=backend,
        formats=format,
        series=series,
        rules=rules,
        truth=truth,
        overwrite=overwrite,
        ts_relative_mm2=ts_relative,
        ts_absolute_mm2=ts_absolute,
        json_output=json_output,
        batch_size=batch_size,
        pixel_spacing=pixel_spacing,
        single_window=single_window,
        fork_builder=bool(_CONSOLE_SCRIPT),  # a fresh process with no thread of ours yet; never under CliRunner
    )
    _EXIT_NOW.append(status)  # run_command returned: every output is committed (or removed), the lock released
    raise typer.Exit(status)


@app.command()
def info(
    model: Annotated[Path | None, typer.Argument(help="Model file; default: the bundled model.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
    threads: Annotated[int | None, typer.Option(min=1, help="Threads for the backend choice (default: all cores).")] = None,
    measure: Annotated[
        bool, typer.Option(help="Time every installed backend on this model now (and cache the choice).")
    ] = False,
) -> None:
    """Show a model's manifest (format, precision, tensors, provenance, baseline metrics) and the backend
    `--backend auto` runs on this machine, and why."""
    command = load_command("edge_runtime.info", "info_command")
    raise typer.Exit(command(model=model, json_output=json_output, threads=threads, measure=measure))


@bench_app.command("accuracy")
def bench_accuracy(
    run_dir: Annotated[Path, typer.Option("--run", help="Training run folder with the float baseline.")],
    artifacts: Annotated[Path, typer.Option(help="Folder of exported artefacts (.tflite/.onnx with manifests).")],
    data: Annotated[Path | None, typer.Option(help="Data folder (default: the run's).")] = None,
    out: Annotated[Path | None, typer.Option("-o", "--output", "--out", help="Write accuracy.json/accuracy.md here.")] = None,
    quick: Annotated[bool, typer.Option(help="Only the first two test patients.")] = False,
    threads: Annotated[int | None, typer.Option(min=1, help="Inference threads (default: all cores).")] = None,
    allow_skip: Annotated[
        bool, typer.Option(help="Accept variants skipped because their backend is not installed (else they fail).")
    ] = False,
) -> None:
    """Dice/IoU of every variant vs the float baseline, with tolerance gates.

    Exit status: 0 every gate passed, 1 a gate failed or a variant failed or was skipped (see --allow-skip), 2 bad input.
    """
    command = load_command("benchmarks.accuracy_cli", "accuracy_command")
    raise typer.Exit(
        command(run_dir=run_dir, artifacts=artifacts, data=data, out=out, quick=quick, threads=threads, allow_skip=allow_skip)
    )


@bench_app.command("latency")
def bench_latency(
    artifacts: Annotated[Path, typer.Option(help="Folder of exported artefacts (.tflite/.onnx with manifests).")],
    threads: Annotated[str, typer.Option(help="Comma list of thread counts.")] = "1,2",
    out: Annotated[Path | None, typer.Option("-o", "--output", "--out", help="Write latency.json/latency.md here.")] = None,
    run_dir: Annotated[
        Path | None, typer.Option("--run", help="Training run: also time its float model in Keras.")
    ] = None,
    quick: Annotated[bool, typer.Option(help="Quick profile: few repeats.")] = False,
    seed_model: Annotated[
        bool, typer.Option(help="Also time the seed project's U-Net in Keras (needs TensorFlow).")
    ] = True,
    runs: Annotated[
        int | None, typer.Option(min=1, help="Whole passes over all models, for the run-to-run spread (full: 3).")
    ] = None,
) -> None:
    """Latency, throughput, size and memory of every variant on this machine, each in a fresh process."""
    command = load_command("benchmarks.latency", "latency_command")
    raise typer.Exit(
        command(artifacts=artifacts, threads=threads, out=out, run_dir=run_dir, quick=quick, seed=seed_model, runs=runs)
    )


@bench_app.command("real")
def bench_real(
    images: Annotated[Path, typer.Option(help="Folder of real slice PNGs named like the reference's `slice` values.")],
    reference: Annotated[Path, typer.Option(help="reference.jsonl: by-eye IVD/TS polygons, contrast, level per slice.")],
    model: Annotated[Path | None, typer.Option(help="Exported .tflite/.onnx model (default: the bundled one).")] = None,
    out: Annotated[
        Path | None, typer.Option("-o", "--output", "--out", help="Write real.json, real.md and real_contact_sheet.png here.")
    ] = None,
    pixel_spacing: Annotated[float, typer.Option(help="Pixel spacing of the PNGs in mm (for areas).")] = 0.6875,
    threads: Annotated[int | None, typer.Option(min=1, help="Inference threads (default: all cores).")] = None,
    single_window: Annotated[bool, typer.Option(help=_SINGLE_WINDOW_HELP)] = False,
) -> None:
    """TS/IVD Dice, TS area error and disc-vs-body accuracy on real slices, by contrast (runtime only)."""
    command = load_command("benchmarks.real", "real_command")
    raise typer.Exit(
        command(images=images, reference=reference, model=model, out=out, pixel_spacing=pixel_spacing, threads=threads,
                single_window=single_window)
    )


@bench_app.command("all")
def bench_all(
    run_dir: Annotated[Path, typer.Option("--run", help="Training run folder with the float baseline.")],
    artifacts: Annotated[Path, typer.Option(help="Folder of exported artefacts (.tflite/.onnx with manifests).")],
    out: Annotated[Path, typer.Option("-o", "--output", "--out", help="Report folder (report.md, report.json, PNG plots).")],
    data: Annotated[Path | None, typer.Option(help="Data folder (default: the run's).")] = None,
    quick: Annotated[bool, typer.Option(help="Quick profile: two test patients, few repeats, 1 thread.")] = False,
    threads: Annotated[
        str | None, typer.Option(help="Comma list of thread counts (default: 1 quick, 1,2 full).")
    ] = None,
    runs: Annotated[
        int | None, typer.Option(min=1, help="Latency passes over all models (default: 1 quick, 3 full).")
    ] = None,
    real_images: Annotated[
        Path | None, typer.Option(help="Also score every variant on these real slices (see `bench real`).")
    ] = None,
    real_reference: Annotated[Path | None, typer.Option(help="reference.jsonl for --real-images.")] = None,
) -> None:
    """Accuracy and latency benchmarks with plots in one report folder (exit 1 when a gate fails)."""
    command = load_command("benchmarks.report", "bench_all_command")
    raise typer.Exit(
        command(run_dir=run_dir, artifacts=artifacts, out=out, data=data, quick=quick, threads=threads, runs=runs,
                real_images=real_images, real_reference=real_reference)
    )


@app.command()
def recipe(
    name: Annotated[str, typer.Argument(help="Recipe name: default (the bundled model) or smoke (minutes).")] = "default",
    out: Annotated[
        Path, typer.Option("-o", "--output", "--out", help="Folder for data, runs, artefacts, report and recipe.json.")
    ] = Path(
        "recipe-out"
    ),
    bundle: Annotated[
        bool, typer.Option(help="Ship the int8 models as the package default and the example study in examples/.")
    ] = False,
    real_images: Annotated[
        Path | None, typer.Option(help="Also score every variant on these real slices (see `bench real`).")
    ] = None,
    real_reference: Annotated[Path | None, typer.Option(help="reference.jsonl for --real-images.")] = None,
) -> None:
    """Reproduce every shipped artefact in one command: synth, train, prune, QAT, export, bench (needs 'train')."""
    command = load_command("benchmarks.recipe", "recipe_command", needs="train")
    raise typer.Exit(command(name=name, out=out, bundle=bundle, real_images=real_images, real_reference=real_reference))


@app.command()
def serve(
    spool: Annotated[Path, typer.Option(help="Durable spool folder: received instances, queue, outbox, status.json.")] = Path(
        "edge-seg-spool"
    ),
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Output tree: OUTPUT/<StudyInstanceUID>/<SeriesInstanceUID>/.")
    ] = Path("edge-seg-results"),
    ae_title: Annotated[str, typer.Option(help="This node's AE title.")] = "EDGESEG",
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")] = "0.0.0.0",
    port: Annotated[int, typer.Option(help="DICOM port to listen on (0: any free port, logged at start).")] = 11112,
    scp: Annotated[bool, typer.Option(help="Run the Storage SCP (--no-scp with --watch: folder input only).")] = True,
    allow: Annotated[
        list[str] | None, typer.Option(help="Calling AE title allowed to store or echo (repeat; default: any).")
    ] = None,
    send: Annotated[
        list[str] | None, typer.Option(help="Send SEG, SR and key images to AE@HOST:PORT by C-STORE (repeat).")
    ] = None,
    watch: Annotated[
        Path | None, typer.Option(help="Also take series folders dropped into this folder (complete after the quiet time).")
    ] = None,
    quiet_seconds: Annotated[float, typer.Option(help="A series is complete this long after its last instance.")] = 5.0,
    min_free_mb: Annotated[
        int, typer.Option(help="Refuse associations and instances when the spool's free disk is below this (MB).")
    ] = 500,
    model: Annotated[Path | None, typer.Option(help="Model file (.tflite/.onnx) with manifest; default: bundled.")] = None,
    backend: Annotated[str, typer.Option(help="auto, litert, tflite-runtime, openvino or onnxruntime.")] = "auto",
    threads: Annotated[int | None, typer.Option(min=1, help="Inference threads (default: all cores).")] = None,
    format: Annotated[
        str, typer.Option(help="Outputs per series, as for `edge-seg run --format` (summary adds key images).")
    ] = "seg,sr,report",
    retry_seconds: Annotated[float, typer.Option(help="First retry delay for a destination; doubles per failure.")] = 2.0,
    retry_max_seconds: Annotated[float, typer.Option(help="Longest retry delay for a destination.")] = 60.0,
    drain_seconds: Annotated[float, typer.Option(help="On SIGTERM: keep processing and sending this long.")] = 20.0,
    network_timeout: Annotated[float, typer.Option(help="Abort an association silent this long (seconds).")] = 60.0,
    retain_hours: Annotated[
        float, typer.Option(help="Keep processed inputs this long (late instances re-run the whole series).")
    ] = 24.0,
    max_associations: Annotated[int, typer.Option(min=1, help="Concurrent associations accepted.")] = 8,
    log: Annotated[Path | None, typer.Option(help="Append the JSON-lines event log to this file instead of stdout.")] = None,
    status: Annotated[bool, typer.Option("--status", help="Print the status of the node on --spool as JSON and exit.")] = False,
) -> None:
    """Scanner-side DICOM node: receive series by C-STORE (or a watch folder), segment, send the results to PACS.

    Exit status: 0 after a clean drain on SIGTERM/SIGINT; 2 bad option, spool in use, model or port error.
    With --status: 0 the node is running, 1 it is not, 2 no spool there.
    """
    require_extra("node")
    from edge_runtime.node.config import Destination, NodeConfig

    command = load_command("edge_runtime.node.service", "serve_command")
    try:
        config = NodeConfig(
            spool=spool, output=output, ae_title=ae_title, host=host, port=port, scp=scp,
            allowed_aets=tuple(allow or ()), destinations=tuple(Destination.parse(d) for d in send or ()),
            watch=watch, quiet_seconds=quiet_seconds, min_free_mb=min_free_mb, model=model, backend=backend,
            threads=threads, formats=format, retry_base_seconds=retry_seconds, retry_max_seconds=retry_max_seconds,
            drain_seconds=drain_seconds, network_timeout=network_timeout, retain_hours=retain_hours,
            max_associations=max_associations, log_path=log,
        )
    except ValueError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    raise typer.Exit(command(config=config, show_status=status))


# `edge-seg run` sets this once run_command has returned; main() then ends the process without
# the interpreter's teardown (0.1-0.2 s of freeing pydicom/highdicom objects on a one-shot run).
_EXIT_NOW: list[int] = []
# Set by main(): this process is the console script's own, so `run` may fork its DICOM builder.
_CONSOLE_SCRIPT: list[bool] = []


def _fewer_collections() -> None:
    """A one-shot run allocates many small objects (pydicom, highdicom) that live until it ends: move
    what the imports left to the permanent generation and collect less often (cycles are still freed)."""
    import gc

    gc.freeze()
    gc.set_threshold(20000, 20, 20)


def _exit_fast(code: int) -> None:
    """End the process now: atexit handlers and stdio flushed, no module teardown.

    Only for the console script's `run`, after run_command returned: its files are all closed and
    moved into place (or removed), its lock released and its thread pool joined, so nothing is lost.
    Never inside `serve`, tests (CliRunner) or library calls, which do not go through main().
    """
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def main() -> None:
    _CONSOLE_SCRIPT.append(True)
    try:
        app()
    except SystemExit as exc:
        if _EXIT_NOW and threading.active_count() == 1:
            _exit_fast(exc.code if isinstance(exc.code, int) else 1)
        raise


if __name__ == "__main__":
    main()

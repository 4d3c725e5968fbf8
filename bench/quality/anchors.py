"""Anchor libraries run on the same model, data and checkpoints as infscope.

Sign conventions (ours: a positive score means the training example lowers the query's loss-like
measurement — it helps). Each adapter returns scores in our convention, ``[n_query, n_train]``:

* kronfluence — ``score = ∇f(q)ᵀ (G + λI)⁻¹ ∇L(z)`` for the measurement ``f`` we give it. We give it
  the *negative* margin (loss-like, as kronfluence's own examples do), so a positive score means
  up-weighting z lowers f: the same sign as ours; used as is.
* traker — scores ``φ(z)ᵀ (ΦᵀΦ)⁻¹ φ(q) · (1 − p(z))`` with φ the gradient of the (positive)
  correct-class margin: positive = z raises q's margin = helps. Same sign; its output is
  ``[n_train, n_query]`` and is transposed.
* captum TracInCP — ``Σ_c η_c ∇ℓ(q)·∇L(z)`` with ``ℓ`` our test loss (the negative margin):
  positive = proponent = helps. Same sign.
* dattri IF / DataInf — ``∇L(z)ᵀ H⁻¹ ∇ℓ(q)`` with ``ℓ`` the target function we pass (negative
  margin): positive = helps; output ``[n_train, n_query]``, transposed.
* cleanlab — label-quality scores in [0, 1], low = likely mislabeled: we rank by ``−score``.

Every mapping is checked on the first task by the sign check in attribution_quality.py (Spearman
correlation and top-k overlap with the matching infscope estimator).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from infscope.evaluation import current_rss_mb

from .common import BenchTask, Split, negative_margin
from .ours import Result, Trained, Workspace


class _PeakRSS:
    """Wall time and peak RSS above the starting RSS, sampled by a thread (as ResourceMeter)."""

    def __init__(self, meter, name: str) -> None:
        self.meter, self.name = meter, name

    def __enter__(self):
        self.base, self.start = current_rss_mb(), time.perf_counter()
        self.stage = self.meter.stage(self.name)
        self.stage.__enter__()
        return self

    def __exit__(self, *exc):
        self.stage.__exit__(*exc)
        self.seconds = time.perf_counter() - self.start
        self.peak = self.meter.report()[self.name]["peak_mb"] - self.base
        return False


def _dataset(split: Split) -> TensorDataset:
    tensors = split.x if isinstance(split.x, tuple) else (split.x,)
    return TensorDataset(*tensors, split.y)


def _model(task: BenchTask, state) -> nn.Module:
    model = task.make_model(0)
    model.load_state_dict(state)
    return model.eval()


def _trainable_linear(model: nn.Module) -> list[str]:
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and module.weight.requires_grad
    ]


def _lm_token_nll(model, ids, mask, labels):
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    targets = labels[:, 1:]
    scored = targets != -100
    nll = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.clamp_min(0).reshape(-1), reduction="none"
    ).reshape(targets.shape)
    return nll * scored, scored, logits


# ---- kronfluence ----------------------------------------------------------------------------------


def _kronfluence_task(task: BenchTask):
    from kronfluence.task import Task as KTask

    if task.kind == "classification":

        class Classification(KTask):
            def compute_train_loss(self, batch, model, sample=False):
                x, y = batch
                logits = model(x)
                if sample:  # true Fisher: labels sampled from the model
                    with torch.no_grad():
                        y = torch.multinomial(F.softmax(logits.detach(), -1), 1).flatten()
                return F.cross_entropy(logits, y, reduction="sum")

            def compute_measurement(self, batch, model):
                x, y = batch
                return negative_margin(model(x), y).sum()  # loss-like, as ours

        return Classification()

    class CausalLM(KTask):
        def compute_train_loss(self, batch, model, sample=False):
            ids, mask, labels = batch
            nll, scored, logits = _lm_token_nll(model, ids, mask, labels)
            if sample:
                with torch.no_grad():
                    probs = F.softmax(logits.detach().reshape(-1, logits.shape[-1]), -1)
                    sampled = torch.multinomial(probs, 1).reshape(scored.shape)
                    sampled_labels = labels.clone()
                    sampled_labels[:, 1:] = torch.where(scored, sampled, labels[:, 1:])
                nll, scored, _ = _lm_token_nll(model, ids, mask, sampled_labels)
            return (nll.sum(1) / scored.sum(1).clamp_min(1)).sum()  # per-example mean, as ours

        def compute_measurement(self, batch, model):
            ids, mask, labels = batch
            nll, _, _ = _lm_token_nll(model, ids, mask, labels)
            return nll.sum()  # −log p(completion | prompt), summed over the batch

    return CausalLM()


def kronfluence_ekfac(
    ws: Workspace,
    trained: dict[str, Trained],
    workdir: Path,
    empirical: bool,
    mislabel: bool,
    strategy: str = "ekfac",
) -> Result:
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments

    task = ws.task
    fisher = "empirical Fisher" if empirical else "true Fisher (sampled labels)"
    name = f"kronfluence {strategy} ({fisher}, λ=0.1×mean eig)"
    batch = task.anchor_batch
    factor_args = FactorArguments(strategy=strategy, use_empirical_fisher=empirical)
    score_args = ScoreArguments(
        damping_factor=None
    )  # kronfluence's 0.1 × mean-eigenvalue heuristic

    def analyzer(labels: str, tag: str):
        model = prepare_model(_model(task, trained[labels].final.state), _kronfluence_task(task))
        return Analyzer(
            analysis_name=f"{task.name}-{tag}-{labels}",
            model=model,
            task=_kronfluence_task(task),
            cpu=True,
            output_dir=str(workdir / "kronfluence"),
            disable_model_save=True,
            disable_tqdm=True,
        )

    tag = f"{strategy}-{'emp' if empirical else 'true'}"
    train = _dataset(task.train)
    with _PeakRSS(ws.meter, name) as meter:
        run = analyzer("clean", tag)
        run.fit_all_factors(
            strategy,
            train,
            per_device_batch_size=batch,
            factor_args=factor_args,
            overwrite_output_dir=True,
        )
        run.compute_pairwise_scores(
            "pairwise",
            strategy,
            _dataset(task.queries),
            train,
            per_device_query_batch_size=len(task.queries),
            per_device_train_batch_size=batch,
            score_args=score_args,
            overwrite_output_dir=True,
        )
        scores = run.load_pairwise_scores("pairwise")["all_modules"].double().numpy()
    result = Result(
        name, "kronfluence 1.0.1", scores=scores, seconds=meter.seconds, peak_mb=meter.peak
    )
    if mislabel and task.noisy_train is not None:
        noisy = _dataset(task.noisy_train)
        run = analyzer("noisy", tag)
        run.fit_all_factors(
            strategy,
            noisy,
            per_device_batch_size=batch,
            factor_args=factor_args,
            overwrite_output_dir=True,
        )
        run.compute_self_scores(
            "self",
            strategy,
            noisy,
            per_device_train_batch_size=batch,
            score_args=score_args,
            overwrite_output_dir=True,
        )
        result.self_influence = run.load_self_scores("self")["all_modules"].double().numpy()
    return result


# ---- traker -------------------------------------------------------------------------------------


def traker_trak(
    ws: Workspace, trained: dict[str, Trained], workdir: Path, mislabel: bool
) -> list[Result]:
    from trak import TRAKer
    from trak.projectors import BasicProjector, ProjectionType

    task = ws.task
    k = task.trak_dim

    def run(
        labels: str, ensemble, targets: Split, train: Split, tag: str, lam: float
    ) -> np.ndarray:
        model = _model(task, ensemble[0].state)
        wrt = [f"{m}.{p}" if m else p for m in _trainable_linear(model) for p in ("weight", "bias")]
        grad_dim = sum(dict(model.named_parameters())[n].numel() for n in wrt)
        projector = BasicProjector(
            grad_dim=grad_dim,
            proj_dim=k,
            seed=0,
            proj_type=ProjectionType.rademacher,
            device="cpu",
            block_size=min(k, 128),
            dtype=torch.float32,
        )
        save = Path(tempfile.mkdtemp(prefix=f"trak-{tag}-", dir=workdir))
        traker = TRAKer(
            model=model,
            task="image_classification",
            train_set_size=len(train),
            save_dir=str(save),
            load_from_save_dir=True,
            device="cpu",
            projector=projector,
            proj_dim=k,
            use_half_precision=False,
            grad_wrt=wrt,
            lambda_reg=lam,
        )
        b = task.anchor_batch
        for model_id, checkpoint in enumerate(ensemble):
            traker.load_checkpoint(checkpoint.state, model_id=model_id)
            for start in range(0, len(train), b):
                x, y = train.batch(slice(start, start + b))
                traker.featurize(batch=(x, y), num_samples=len(y))
        traker.finalize_features()
        for model_id, checkpoint in enumerate(ensemble):
            traker.start_scoring_checkpoint(
                exp_name=tag,
                checkpoint=checkpoint.state,
                model_id=model_id,
                num_targets=len(targets),
            )
            for start in range(0, len(targets), b):
                x, y = targets.batch(slice(start, start + b))
                traker.score(batch=(x, y), num_samples=len(y))
        out = np.asarray(traker.finalize_scores(exp_name=tag), dtype=np.float64).T
        shutil.rmtree(save, ignore_errors=True)
        return out  # [n_targets, n_train], positive = helps

    def matched(labels: str) -> float:
        """traker's λ (added to XᵀX) equal to our TRAK's default: ours inverts ΦᵀΦ + nλI with
        λ = 1 × trace(ΦᵀΦ/n) / min(n, k). traker's features are ``R g / √D`` (R: k × D ±1
        entries, D = gradient dimension), so XᵀX ≈ (k/D) ΦᵀΦ (our JL features keep ‖g_i‖²) and
        the matching λ is (k/D) × Σ_i ‖φ_i‖² / min(n, k)."""
        phi = ws.store(f"train:{labels}:ens").features("model-0").astype(np.float64)
        model = task.make_model(0)
        dim = sum(
            p.numel() for m in _trainable_linear(model) for p in model.get_submodule(m).parameters()
        )
        return (k / dim) * float((phi**2).sum()) / min(len(phi), k)

    results = []
    sizes = [(1, False), (1, True)] + ([(task.ensemble, True)] if task.ensemble > 1 else [])
    small = task.projection.kind == "identity"
    if not small:
        # on CPU traker's BasicProjector regenerates the k × D matrix for every batch (≈10 s
        # per batch for D = 1.6 M, k = 1024): one configuration, no self-influence run
        sizes, mislabel = [(1, True)], False
    for size, match in sizes:
        lam = (
            {"clean": matched("clean"), "noisy": matched("noisy")}
            if match
            else {"clean": 0.0, "noisy": 0.0}
        )
        label = f"λ={lam['clean']:.3g} = ours" if match else "λ=0 (default)"
        name = f"traker ({size} model{'s' if size > 1 else ''}, rademacher k={k}, {label})"
        with _PeakRSS(ws.meter, name) as meter:
            scores = run(
                "clean",
                trained["clean"].ensemble[:size],
                task.queries,
                task.train,
                f"q{size}",
                lam["clean"],
            )
        result = Result(
            name, "traker 0.3.2", scores=scores, seconds=meter.seconds, peak_mb=meter.peak
        )
        if mislabel and task.noisy_train is not None:
            # self-influence: score the training set against itself, keep the diagonal
            own = run(
                "noisy",
                trained["noisy"].ensemble[:size],
                task.noisy_train,
                task.noisy_train,
                f"s{size}",
                lam["noisy"],
            )
            result.self_influence = np.diag(own).copy()
        results.append(result)
    return results


# ---- captum -------------------------------------------------------------------------------------


class _MarginLoss(nn.Module):
    """The negative margin, summed (captum needs a ``reduction`` attribute)."""

    reduction = "sum"

    def forward(self, logits, labels):
        return negative_margin(logits, labels).sum()


def captum_tracin(
    ws: Workspace, trained: dict[str, Trained], workdir: Path, mislabel: bool
) -> Result:
    from captum.influence import TracInCP

    task = ws.task

    def tracin(labels: str, train: Split):
        folder = workdir / f"captum-{labels}"
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for checkpoint in trained[labels].trajectory:
            path = folder / f"{checkpoint.name}.pt"
            torch.save({"state": checkpoint.state, "lr": checkpoint.learning_rate}, path)
            paths.append(str(path))

        def load(model, path):
            saved = torch.load(path)
            model.load_state_dict(saved["state"])
            return saved["lr"]

        model = _model(task, trained[labels].final.state)
        layers = _trainable_linear(model)
        return TracInCP(
            model,
            _dataset(train),
            checkpoints=paths,
            checkpoints_load_func=load,
            layers=layers if all(layers) else None,
            loss_fn=nn.CrossEntropyLoss(reduction="sum"),
            test_loss_fn=_MarginLoss(),
            batch_size=task.anchor_batch,
            sample_wise_grads_per_batch=True,
        )

    name = "captum TracInCP (all checkpoints)"
    with _PeakRSS(ws.meter, name) as meter:
        scores = tracin("clean", task.train).influence((task.queries.x, task.queries.y), k=None)
    result = Result(
        name,
        "captum 0.9.0",
        scores=scores.double().numpy(),
        seconds=meter.seconds,
        peak_mb=meter.peak,
    )
    if mislabel and task.noisy_train is not None:
        result.self_influence = tracin("noisy", task.noisy_train).self_influence().double().numpy()
    return result


# ---- dattri -------------------------------------------------------------------------------------


def dattri_methods(ws: Workspace, trained: dict[str, Trained], mislabel: bool) -> list[Result]:
    from dattri.algorithm.influence_function import (
        IFAttributorCG,
        IFAttributorDataInf,
        IFAttributorExplicit,
    )
    from dattri.task import AttributionTask

    task = ws.task

    def attribution_task(labels: str, margin: bool = True):
        model = _model(task, trained[labels].final.state)

        def loss(params, data):
            x, y = data
            return F.cross_entropy(torch.func.functional_call(model, params, (x,)), y)

        def target(params, data):
            x, y = data
            logits = torch.func.functional_call(model, params, (x,))
            if logits.ndim == 1:
                return negative_margin(logits[None], y.reshape(1)).sum()
            return negative_margin(logits, y).mean()

        return AttributionTask(
            loss_func=loss,
            model=model,
            checkpoints=model.state_dict(),
            target_func=target if margin else loss,
        )

    def loaders(train: Split):
        full = DataLoader(_dataset(train), batch_size=len(train), shuffle=False)
        part = DataLoader(_dataset(train), batch_size=task.anchor_batch, shuffle=False)
        return full, part

    features = ws.store("train:clean:traj").features("final").astype(np.float64)
    datainf_lambda = 0.1 * float((features**2).sum(1).mean()) / features.shape[1]
    configs = []
    if task.hessian:
        # the absolute λ of our default model-Hessian influence, for a matched comparison
        from infscope.attribution import InfluenceFunction
        from infscope.curvature.hessian import ModelHessian

        ws.load_final("clean")
        hessian = ModelHessian.from_extractor(ws.extractor("train:clean:traj"), task.train.examples)
        ours = InfluenceFunction(solver="cg", curvature=hessian).fit(ws.store("train:clean:traj"))
        hessian_lambda = ours.absolute_damping["final"]
        if task.name == "digits-logreg":
            configs.append(
                (
                    f"dattri IF explicit Hessian (λ={2 * task.l2:g} abs = the L2 term)",
                    lambda t: IFAttributorExplicit(
                        task=t, device="cpu", regularization=2 * task.l2
                    ),
                )
            )
        for reg, label in ((0.0, "dattri default"), (hessian_lambda, "= our default")):
            configs.append(
                (
                    f"dattri IF CG (10 iterations, λ={reg:.3g} {label})",
                    lambda t, reg=reg: IFAttributorCG(
                        task=t, device="cpu", regularization=reg, max_iter=10
                    ),
                )
            )
    configs.append(
        (
            f"dattri DataInf (λ={datainf_lambda:.3g} abs = 0.1×mean eig, per parameter tensor)",
            lambda t: IFAttributorDataInf(task=t, device="cpu", regularization=datainf_lambda),
        )
    )
    # dattri's CG vmaps Hessian-vector products over a whole query batch: for the 9,610-parameter
    # MLP 100 at once asked for 33 GB, so big models get batches of 10
    query_batch = len(task.queries) if features.shape[1] <= 5000 else 10
    queries = DataLoader(_dataset(task.queries), batch_size=query_batch, shuffle=False)
    results = []
    for name, make in configs:
        try:  # one configuration running out of memory must not lose the others
            with _PeakRSS(ws.meter, name) as meter:
                attributor = make(attribution_task("clean"))
                full, part = loaders(task.train)
                attributor.cache(full)
                scores = attributor.attribute(part, queries).detach().T.double().numpy()
        except RuntimeError as err:
            note = f"FAILED: {str(err).splitlines()[0][:160]}"
            results.append(Result(name, "dattri 0.3.0", note=note))
            continue
        result = Result(
            name, "dattri 0.3.0", scores=scores, seconds=meter.seconds, peak_mb=meter.peak
        )
        # dattri's CG transforms every training gradient as a query (vmapped): for the
        # 9,610-parameter MLP that ran out of 24 GB, so its self-influence is left out there
        too_big = "CG" in name and features.shape[1] > 5000
        if too_big:
            result.note = (
                "no self-influence: dattri's CG over 1,000 training vectors ran out of memory"
            )
        if mislabel and task.noisy_train is not None and not too_big:
            # self-influence: the diagonal of train x train attribution, loss on both sides
            attributor = make(attribution_task("noisy", margin=False))
            full, part = loaders(task.noisy_train)
            attributor.cache(full)
            own = attributor.attribute(
                part, DataLoader(_dataset(task.noisy_train), batch_size=len(task.noisy_train))
            )
            result.self_influence = torch.diagonal(own.detach()).double().numpy()
        results.append(result)
    return results


# ---- cleanlab -----------------------------------------------------------------------------------


def cleanlab_scores(ws: Workspace, folds: int = 5) -> Result:
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    from sklearn.model_selection import StratifiedKFold

    task = ws.task
    noisy = task.noisy_train
    labels = noisy.y.numpy()
    name = f"cleanlab label quality ({folds}-fold out-of-sample probabilities)"
    with _PeakRSS(ws.meter, name) as meter:
        probs = np.zeros((len(labels), task.n_classes))
        for fold, (fit_idx, out_idx) in enumerate(
            StratifiedKFold(folds, shuffle=True, random_state=0).split(labels, labels)
        ):
            model, _ = task.train_model(noisy.subset(fit_idx), seed=fold)
            model.eval()
            with torch.no_grad():
                x = noisy.subset(out_idx).x
                probs[out_idx] = F.softmax(model(x), dim=1).double().numpy()
        quality = get_label_quality_scores(labels, probs)
        issues = find_label_issues(labels, probs)
    flagged = issues.sum()
    precision = float((issues & task.flipped).sum() / max(flagged, 1))
    recall = float((issues & task.flipped).sum() / task.flipped.sum())
    return Result(
        name,
        "cleanlab 2.9.0",
        self_influence=-quality,
        seconds=meter.seconds,
        peak_mb=meter.peak,
        note=f"find_label_issues flags {flagged}: precision {precision:.2f}, recall {recall:.2f}",
    )

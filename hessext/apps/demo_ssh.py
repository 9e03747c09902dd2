"""``hessext demo``: the whole Hessian toolbox on the disordered SSH chain (docs/methods.md §8)."""

from __future__ import annotations

import torch

from hessext.apps import analysis as tb
from hessext.datasets.ssh import critical_v, ssh_splits
from hessext.interpret import cam
from hessext.models import SSHCNN
from hessext.reporting import figures as F
from hessext.reporting.report import Report, StageTimer
from hessext.training import train

# n_train: training images at W = 0 (half at v in [0, 0.8], half in [1.2, 2]), at most n_eval;
# n_eval: images per validation/test/OOD set. The exact Hessian (P = 1,024, packed-tangent path
# for the BatchNorm CNN) takes about 4 s for 200 images on 2 cores; default: ~30 s in all.
SIZES = {
    "small": dict(n_train=12, n_eval=24, epochs=15, batch_size=6, n_bootstrap=10),
    "default": dict(n_train=200, n_eval=200, epochs=40, batch_size=16, n_bootstrap=50),
    "large": dict(n_train=200, n_eval=500, epochs=40, batch_size=16, n_bootstrap=50),
}
W_SETS = (0.15, 0.5, 1.0, 2.0)
STATE_NAMES = {0: "trivial", 1: "topological"}


def run_ssh_demo(
    out="hessext-report",
    *,
    size: str = "default",
    seed: int = 0,
    progress: bool | None = None,
    quiet: bool = False,
):
    """``hessext demo``: the whole toolbox on an SSH phase classifier, as a report folder.
    Returns (path, timer)."""

    cfg = SIZES[size]
    timer = StageTimer(7, quiet=quiet)
    with Report(out, "hessext demo: Hessian-based analysis of an SSH phase classifier") as rep:
        with timer.stage("generate SSH data"):
            sp = ssh_splits(seed=seed, n_per_split=cfg["n_eval"], w_ood=W_SETS)
            idx = torch.linspace(0, cfg["n_eval"] - 1, cfg["n_train"]).round().long()
            x_tr, y_tr, v_tr = sp.train.images[idx], sp.train.y[idx], sp.train.v[idx]
            sets = {"W = 0 (test)": sp.test}
            sets.update({f"W = {w:g}": sp.ood[float(w)] for w in W_SETS})
            w_of_set = [0.0, *W_SETS]
        with timer.stage("train the SSH CNN"):
            model = SSHCNN(seed=seed)
            _, history = train(
                model,
                x_tr,
                y_tr,
                epochs=cfg["epochs"],
                lr=1e-2,
                batch_size=cfg["batch_size"],
                seed=seed,
                optimizer="adam",
                progress=progress,
            )
            model.eval()
            with torch.no_grad():
                acc = {k: float((model(d.x).argmax(1) == d.y).float().mean()) for k, d in sets.items()}
                pred = {k: model(d.x).argmax(1) for k, d in sets.items()}
        with timer.stage("exact Hessian (float64)"):
            H = tb.exact_hessian(model, x_tr, y_tr, progress=progress)
            lam, _ = H.eigh()
            st = tb.choose_settings(lam)
        with timer.stage("influence and RelatIF"):
            # misclassified disordered inputs, strongest disorder first
            picks: list[tuple[float, int]] = []
            for w in (2.0, 1.0, 0.5):
                d, p = sp.ood[w], pred[f"W = {w:g}"]
                for i in torch.nonzero(p != d.y).flatten().tolist():
                    if len(picks) < 3:
                        picks.append((w, i))
            if not picks:  # everything right: take the least confident W = 2 inputs
                with torch.no_grad():
                    conf = model(sp.ood[2.0].x).softmax(1).max(1).values
                picks = [(2.0, int(i)) for i in conf.argsort()[:3]]
            xt = torch.stack([sp.ood[w].x[i] for w, i in picks])
            yt = torch.stack([sp.ood[w].y[i] for w, i in picks])
            inf, rel = tb.influence_scores(
                model, (x_tr, y_tr), (xt, yt), H, st["damping_influence"], progress=progress
            )
        with timer.stage("RUE and extrapolation score"):
            data = {k: (d.x, d.y) for k, d in sets.items()}
            rue_v, score_v, n_removed, rue_solver = tb.rue_and_score(
                model, (x_tr, y_tr), data, H, st, seed=seed, n_bootstrap=cfg["n_bootstrap"], progress=progress
            )
            au_score = tb.auroc(score_v["W = 0 (test)"], score_v["W = 2"])
            au_rue = tb.auroc(rue_v["W = 0 (test)"], rue_v["W = 2"])
        with timer.stage("CAM"):
            xc = torch.cat([sp.test.images[:3], sp.ood[2.0].images[:3]])
            maps = cam(model, xc, "block3", upsample=True)
            with torch.no_grad():
                pc = model(xc).argmax(1)
        with timer.stage("figures and report"):
            _write(rep, F, locals())
            rep.table(["stage", "seconds"], timer.table())
            path = rep.finish()
    return path, timer


def _effect(score) -> str:
    return "helped" if float(score) > 0 else "harmed"


def _img_caption(d, i, pred=None):
    text = f"v={float(d.v[i]):.2f} W={float(d.W[i]):g}\nlabel {STATE_NAMES[int(d.y[i])]}"
    if pred is not None:
        text += f"\npred {STATE_NAMES[int(pred)]}"
    return text


def _write(rep, F, L):

    cfg, st, H, lam, sp = L["cfg"], L["st"], L["H"], L["lam"], L["sp"]
    x_tr, y_tr, v_tr, seed = L["x_tr"], L["y_tr"], L["v_tr"], L["seed"]
    rep.text(
        "The disordered Su–Schrieffer–Heeger chain (50 sites): each input is the 50×50 image "
        "|ψ_i(j)|² of the open chain's eigenstates (site j down, eigenstate i across, sorted by "
        "energy); the label is the winding number (topological or trivial). A CNN with "
        f"BatchNorm ({H.num_params:,} parameters) is trained on clean chains (disorder W = 0) "
        "away from the transition v = 1, then asked about disordered chains it never saw. "
        "Everything below comes from the exact Hessian of its training loss "
        "(mean cross-entropy, BatchNorm in eval mode)."
    )
    rep.heading("Setup")
    rep.table(
        ["item", "value"],
        [
            ["seed", seed],
            ["size preset", L["size"]],
            [
                "training set",
                f"{len(y_tr)} images at W = 0, v ∈ [0, 0.8] ∪ [1.2, 2] ({int(y_tr.sum())} topological)",
            ],
            ["evaluation sets", f"{cfg['n_eval']} images each, v ~ U[0, 2], W ∈ {{0, 0.15, 0.5, 1, 2}}"],
            [
                "training",
                f"Adam lr 0.01, batch {cfg['batch_size']}, {cfg['epochs']} epochs, "
                f"final training loss {L['history'][-1]:.3g}",
            ],
            [
                "Hessian",
                f"exact, dense {H.num_params}×{H.num_params}, float64 accumulation of float32 "
                f"model products, {H.info.get('seconds', float('nan')):.1f} s",
            ],
        ],
    )
    rep.table(
        ["set", "accuracy", "critical v_c(W)"],
        [[k, f"{a:.3f}", f"{critical_v(w):.3f}"] for (k, a), w in zip(L["acc"].items(), L["w_of_set"])],
    )

    rep.heading("Hessian spectrum")
    rep.figure(
        F.spectrum(
            lam,
            damping=st["damping_influence"],
            threshold=st["score_threshold"],
            title=f"Exact Hessian of the SSH CNN's training loss (P = {H.num_params})",
        ),
        "spectrum",
        f"All {H.num_params} eigenvalues, largest first, on a symmetric-log axis (linear in the "
        "grey band around 0). Red points are negative: the trained network is not at a "
        f"minimum in those {st['n_negative']} directions, so influence uses the damping "
        f"δ = {st['damping_influence']:g} > |λ_min| = {abs(st['lambda_min']):.3g} (dashed). "
        f"The dotted line is the extrapolation-score threshold.",
    )
    rep.table(["quantity", "value"], tb.settings_table(st, H, L["n_removed"]))

    rep.heading("Influence and RelatIF: which training images explain a mistake?")
    inf, rel, picks = L["inf"], L["rel"], L["picks"]
    rows, labels = [], []
    for t, (w, i) in enumerate(picks):
        d = sp.ood[w]
        for name, scores in (("influence", inf), ("RelatIF", rel)):
            s = scores[:, t]
            help_i = s.argsort(descending=True)[:3].tolist()
            harm_i = s.argsort()[:3].tolist()
            row = [(d.x[i, 0], "test input\n" + _img_caption(d, i, L["pred"][f"W = {w:g}"][i]))]
            # the label follows the sign: when no training image helped, the "most helpful"
            # column holds the least harmful ones, and the title must not claim they helped
            row += [
                (
                    x_tr[j, 0],
                    f"{_effect(s[j])} {name}\n{float(s[j]):+.2g}, "
                    f"v={float(v_tr[j]):.2f}\n{STATE_NAMES[int(y_tr[j])]}",
                )
                for j in help_i + harm_i
            ]
            rows.append(row)
            labels.append(f"{name}")
    rep.figure(
        F.image_rows(
            rows,
            row_labels=labels,
            title="Most helpful and most harmful training images for misclassified disordered inputs",
        ),
        "influence",
        "Each row: a disordered test input the model gets wrong (left, with its true label and "
        "the prediction), then the three training images whose removal would most INCREASE its "
        "loss (largest score) and the three whose removal would most DECREASE it (smallest "
        "score); each is labelled by its sign: helped (positive) or harmed (negative). "
        "Influence IF = (1/n) g_testᵀ (H + δI)⁻¹ g_train; RelatIF "
        "divides by ‖(H + δI)⁻¹ g_train‖ so that examples with huge, generic gradients do not "
        f"dominate. Damping δ = {st['damping_influence']:g}.",
    )

    rep.heading("Uncertainty and out-of-distribution detection as functions of disorder")
    pos = L["w_of_set"]
    rep.figure(
        F.per_set_distribution(
            L["rue_v"],
            positions=pos,
            xlabel="disorder strength W",
            ylabel="RUE: variance of class probabilities\nover bootstrap models",
            title="RUE uncertainty vs disorder",
        ),
        "rue_vs_W",
        f"RUE (resampling uncertainty): {cfg['n_bootstrap']} bootstrap resamples of the training "
        "set, each model obtained by one Newton step θ_b = θ − (H + δI)⁻¹ Gᵀ(w_b − 1)/n with "
        f"δ = {st['damping_rue']:g}; the value is the variance over b of the predicted class "
        "probabilities (summed over the two classes). Training data are at W = 0.",
    )
    rep.figure(
        F.per_set_distribution(
            L["score_v"],
            positions=pos,
            xlabel="disorder strength W",
            ylabel="extrapolation score ‖U⊥ᵀ g(x)‖",
            title="Local-ensemble extrapolation score vs disorder",
        ),
        "score_vs_W",
        f"Extrapolation score of local ensembles: the norm of the prediction gradient g(x) "
        f"(predicted-class logit) outside the {L['n_removed']} top-curvature directions of H "
        f"(eigenvalues > t = {st['score_threshold']:.3g}). Large values: the training data do not "
        "constrain this prediction.",
    )
    rep.figure(
        F.ood_histogram(
            L["score_v"]["W = 0 (test)"],
            L["score_v"]["W = 2"],
            auroc=L["au_score"],
            clean_label="clean test (W = 0)",
            shifted_label="disordered (W = 2)",
            xlabel="extrapolation score",
            title="Does the score flag disordered inputs?",
        ),
        "score_ood",
        f"AUROC = {L['au_score']:.3f}: the probability that a random W = 2 input scores higher "
        f"than a random clean one (rank-sum formula, ties counted half). RUE gives AUROC = "
        f"{L['au_rue']:.3f} on the same sets.",
    )
    rows = [
        [
            k,
            f"{float(L['rue_v'][k].median()):.3g}",
            f"{float(L['rue_v'][k].mean()):.3g}",
            f"{float(L['score_v'][k].median()):.3g}",
        ]
        for k in L["rue_v"]
    ]
    rep.table(["set", "median RUE", "mean RUE", "median score"], rows)

    def verdict(au):
        if au >= 0.7:
            return "flags the disordered inputs (higher values for W = 2)"
        if au <= 0.3:
            return (
                "is systematically LOWER for the disordered inputs: it separates the sets, but in "
                "the opposite direction to an out-of-distribution flag"
            )
        return "hardly separates the two sets"

    rep.text(
        f"**AUROC clean vs W = 2**: extrapolation score {L['au_score']:.3f}, RUE {L['au_rue']:.3f}. "
        f"The extrapolation score {verdict(L['au_score'])}; RUE {verdict(L['au_rue'])}. "
        "(AUROC is the probability that a random W = 2 input gets a higher value than a random "
        "clean one; 0.5 is chance.)"
    )

    rep.heading("Class activation maps")
    xc, maps, pc = L["xc"], L["maps"], L["pc"]
    caps = []
    for k in range(len(xc)):
        d = sp.test if k < 3 else sp.ood[2.0]
        caps.append(_img_caption(d, k % 3, pc[k]))
    rep.figure(
        F.cam_panels(
            [x[0] for x in xc],
            [m for m in maps],
            caps,
            title="CAM over the last conv block: clean (left 3) vs W = 2 (right 3)",
        ),
        "cam",
        "Top: inputs; bottom: the class activation map Σ_k w_ck A_k(j, i) of the predicted class c "
        "(last conv block, upsampled to 50×50) minus its mean over the image (the mean plus the "
        "head's bias is the logit). Red regions carry more evidence for the predicted class than "
        "average, blue less; each map has its own colour range. Compare where the evidence sits "
        "for clean chains (extended states) and for W = 2 (localised states).",
    )
    rep.heading("Timings (seconds)")

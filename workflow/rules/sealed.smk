# The sealed test survey (lensfinder.sealed), on request only: snakemake --cores all sealed.
# A second mock sky with its own seed and bricks, scored by the trained networks, the
# meta-learner and a catalogue-only baseline. No rule of the main run reads anything here.
SEALED = f"{RESULTS}/sealed"  # this run's scores and figures
SEALED_DATA = lfw.sealed_root(config)  # the survey itself (like the mock's tree): shared by runs
SEALED_SWEEPS = lfw.sealed_sweeps(config)


rule sealed_survey:
    output:
        manifests=expand(f"{SEALED_DATA}/cutouts/{{sweep}}/manifest.json", sweep=SEALED_SWEEPS),
        objects=expand(f"{SEALED_DATA}/objects/{{sweep}}.parquet", sweep=SEALED_SWEEPS),
        truth=f"{SEALED_DATA}/survey/truth/lenses.csv",
        lookalikes=f"{SEALED_DATA}/survey/truth/lookalikes.csv",
        summary=f"{SEALED_DATA}/survey.json",
    log:
        "logs/sealed_survey.log",
    params:
        mock=config["mock"],
        sealed=config["sealed"],
        selection=config["selection"],
        cutouts=config["cutouts"],
    threads: 4  # cutouts rendered in parallel (at most the cores given)
    resources:
        mem_mb=16000,
        runtime=120,
    conda:
        "../../envs/lensfinder.yaml"
    script:
        "../scripts/sealed_survey.py"


rule sealed_infer:
    input:
        manifests=rules.sealed_survey.output.manifests,
        checkpoint=f"{RESULTS}/models/{{model}}/best.pt",
    output:
        f"{SEALED}/scores/{{model}}.parquet",
    log:
        f"{RESULTS}/logs/sealed/infer/{{model}}.log",
    params:
        infer=INFER_SETTINGS,
        sweeps=SEALED_SWEEPS,
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    conda:
        "../../envs/lensfinder.yaml"
    script:
        "../scripts/infer.py"


rule sealed_inject:
    input:
        objects=rules.sealed_survey.output.objects,
        cutouts=rules.sealed_survey.output.manifests,
        truth=rules.sealed_survey.output.truth,
    output:
        manifest=f"{SEALED_DATA}/injections/manifest.json",
        summary=f"{SEALED_DATA}/injections/summary.json",
        mosaic=f"{SEALED_DATA}/injections/injections.png",
    log:
        "logs/sealed_inject.log",
    params:
        injection=config["injection"],
    resources:
        mem_mb=8000,
        runtime=120,
    conda:
        "../../envs/lensfinder.yaml"
    script:
        "../scripts/sealed_inject.py"


rule sealed_infer_injections:
    input:
        manifests=[rules.sealed_inject.output.manifest],
        checkpoint=f"{RESULTS}/models/{{model}}/best.pt",
    output:
        f"{SEALED}/injections/scores/{{model}}.parquet",
    log:
        f"{RESULTS}/logs/sealed/infer_injections/{{model}}.log",
    params:
        infer=INFER_SETTINGS,
        sweeps=["injections"],
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    conda:
        "../../envs/lensfinder.yaml"
    script:
        "../scripts/infer.py"


rule sealed_baseline:
    input:
        labels=f"{RESULTS}/trainset/labels.parquet",
        objects=expand(f"{RESULTS}/objects/{{sweep}}.parquet", sweep=SWEEPS),
        sealed_objects=rules.sealed_survey.output.objects,
    output:
        model=f"{SEALED}/catalogue_only/model.pkl",
        scores=f"{SEALED}/catalogue_only/scores.parquet",
    log:
        f"{RESULTS}/logs/sealed/baseline.log",
    resources:
        mem_mb=8000,
        runtime=30,
    conda:
        "../../envs/lensfinder.yaml"
    script:
        "../scripts/sealed_baseline.py"


rule sealed_measure:
    input:
        **{f"scores_{m}": f"{SEALED}/scores/{m}.parquet" for m in NETWORKS},
        **{f"injected_{m}": f"{SEALED}/injections/scores/{m}.parquet" for m in NETWORKS},
        injections=rules.sealed_inject.output.manifest,
        baseline=rules.sealed_baseline.output.scores,
        objects=rules.sealed_survey.output.objects,
        meta=f"{RESULTS}/ensemble/meta.npz",
        truth=rules.sealed_survey.output.truth,
        lookalikes=rules.sealed_survey.output.lookalikes,
        summary=rules.sealed_survey.output.summary,
    output:
        metrics=report(f"{SEALED}/metrics.json", caption="../report/sealed_metrics.rst", category="7. Sealed survey"),
        table=f"{SEALED}/metrics.csv",
        kinds=report(f"{SEALED}/fpr_by_kind.csv", caption="../report/sealed_kinds.rst", category="7. Sealed survey"),
        plot=report(f"{SEALED}/roc.png", caption="../report/sealed_roc.rst", category="7. Sealed survey"),
    log:
        f"{RESULTS}/logs/sealed/measure.log",
    params:
        models=NETWORKS,
        evaluation=config["evaluation"],
        probe_in_ensemble=PROBE_IN_ENSEMBLE,
    resources:
        mem_mb=16000,
        runtime=60,
    conda:
        "../../envs/lensfinder.yaml"
    script:
        "../scripts/sealed_measure.py"


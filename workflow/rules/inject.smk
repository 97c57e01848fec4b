# Injection-recovery: simulated lenses painted onto real cutouts of deflectors outside the
# training set, scored by every model and the ensemble; the selection function at the
# recommendation cut, and on a truth list its cross-check against never-seen real lenses.
# (config["injection"] always exists: the schema's default fills it in.)


rule inject:
    input:
        objects=expand(f"{RESULTS}/objects/{{sweep}}.parquet", sweep=SWEEPS),
        cutouts=expand(f"{RESULTS}/cutouts/{{sweep}}/manifest.json", sweep=SWEEPS),
        labels=f"{RESULTS}/trainset/labels.parquet",
        catalogs=[c["path"] for c in config["lens_catalogs"] if c.get("path")],
        truth=config["evaluation"].get("truth") or [],
    output:
        manifest=f"{RESULTS}/injections/manifest.json",
        summary=f"{RESULTS}/injections/summary.json",
        mosaic=report(f"{RESULTS}/injections/injections.png", caption="../report/injections.rst",
                      category="7. Selection function"),
    log:
        f"{RESULTS}/logs/inject.log",
    params:
        injection=config["injection"],
        catalogs=config["lens_catalogs"],
    resources:
        mem_mb=8000,
        runtime=120,
    conda:
        "../../envs/lensfinder.yaml"
    script:
        "../scripts/inject.py"


rule infer_injections:
    input:
        manifests=[f"{RESULTS}/injections/manifest.json"],
        checkpoint=f"{RESULTS}/models/{{model}}/best.pt",
    output:
        f"{RESULTS}/injections/scores/{{model}}.parquet",
    log:
        f"{RESULTS}/logs/infer_injections/{{model}}.log",
    params:
        infer=INFER_SETTINGS,
        sweeps=["injections"],  # the SWEEP column of its scores
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    conda:
        "../../envs/lensfinder.yaml"
    script:
        "../scripts/infer.py"


rule selection_function:
    input:
        unpack(injection_scores),
        manifest=f"{RESULTS}/injections/manifest.json",
        meta=f"{RESULTS}/ensemble/meta.pkl",
        rank_summary=f"{RESULTS}/recommendations/summary.json",
    output:
        completeness=report(f"{RESULTS}/selection_function/completeness.csv",
                            caption="../report/selection_function_table.rst", category="7. Selection function"),
        one_d=f"{RESULTS}/selection_function/completeness_1d.csv",
        scored=f"{RESULTS}/selection_function/injections_scored.parquet",
        summary=f"{RESULTS}/selection_function/summary.json",
        heatmap=report(f"{RESULTS}/selection_function/heatmap.png", caption="../report/selection_function_heatmap.rst",
                       category="7. Selection function"),
        curves=report(f"{RESULTS}/selection_function/curves.png", caption="../report/selection_function_curves.rst",
                      category="7. Selection function"),
    log:
        f"{RESULTS}/logs/selection_function.log",
    params:
        models=MODELS,
        injection=config["injection"],
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../../envs/lensfinder.yaml"
    script:
        "../scripts/selection_function.py"


rule selection_crosscheck:
    input:
        scored=f"{RESULTS}/selection_function/injections_scored.parquet",
        metrics=f"{RESULTS}/evaluation/metrics.json",
    output:
        table=report(f"{RESULTS}/selection_function/crosscheck.csv", caption="../report/selection_crosscheck.rst",
                     category="7. Selection function"),
        statement=f"{RESULTS}/selection_function/crosscheck.json",
        plot=report(f"{RESULTS}/selection_function/crosscheck.png", caption="../report/selection_crosscheck.rst",
                    category="7. Selection function"),
    log:
        f"{RESULTS}/logs/selection_crosscheck.log",
    params:
        theta_e_bins=config["evaluation"]["theta_e_bins"],
        injection=config["injection"],
    localrule: True
    conda:
        "../../envs/lensfinder.yaml"
    script:
        "../scripts/selection_crosscheck.py"

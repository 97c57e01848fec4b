# The selection function (lensfinder.evaluation.selection_function): the completeness of the
# injected lenses (inject.smk) at the recommendation cut, by Einstein radius and source
# magnitude, and on a truth list its cross-check against the never-seen real lenses.


rule selection_function:
    input:
        unpack(injection_scores),
        manifest=f"{RESULTS}/injections/manifest.json",
        meta=f"{RESULTS}/ensemble/meta.npz",
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

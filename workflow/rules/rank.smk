# Ranking (lensfinder.ranking): the meta-learner, each batch's shortlists (every sweep's
# ensemble scores, cut to what the ranking could need) and the ranked recommendations.


rule ensemble:
    input:
        unpack(model_trainset_inputs),
    output:
        meta=f"{RESULTS}/ensemble/meta.npz",
        info=f"{RESULTS}/ensemble/meta.json",
        evaluation=report(f"{RESULTS}/ensemble/evaluation.csv", caption="../report/ensemble_table.rst",
                          category="4. Ensemble"),
        plot=report(f"{RESULTS}/ensemble/comparison.png", caption="../report/ensemble_plot.rst", category="4. Ensemble"),
    log:
        f"{RESULTS}/logs/ensemble.log",
    params:
        models=MODELS,
        ensemble=config["ensemble"],
    conda:
        "../../envs/lensfinder.yaml"
    script:
        "../scripts/ensemble.py"


rule shortlist:
    input:
        unpack(batch_model_scores),
        objects=batch_files(f"{RESULTS}/objects/{{sweep}}.parquet"),
        meta=f"{RESULTS}/ensemble/meta.npz",
    output:
        parquet=f"{RESULTS}/ensemble/shortlists/{{batch}}.parquet",
        info=f"{RESULTS}/ensemble/shortlists/{{batch}}.json",
    log:
        f"{RESULTS}/logs/shortlist/{{batch}}.log",
    params:
        models=MODELS,
        sweeps=batch_sweeps,
        # only what a shortlist keeps: changing the cut or the radii re-runs rank alone
        rank={k: config["rank"][k] for k in ("keep_top_per_sweep", "keep_above_score")},
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../../envs/lensfinder.yaml"
    script:
        "../scripts/shortlist.py"


rule rank:
    input:
        shortlists=expand(f"{RESULTS}/ensemble/shortlists/{{batch}}.parquet", batch=BATCHES),
        infos=expand(f"{RESULTS}/ensemble/shortlists/{{batch}}.json", batch=BATCHES),
        manifests=expand(f"{RESULTS}/cutouts/{{sweep}}/manifest.json", sweep=SWEEPS),
        catalogs=catalog_input_files(config["lens_catalogs"]),
    output:
        parquet=f"{RESULTS}/recommendations/recommendations.parquet",
        csv=report(f"{RESULTS}/recommendations/recommendations.csv", caption="../report/recommendations.rst",
                   category="5. Recommendations"),
        fits=f"{RESULTS}/recommendations/recommendations.fits",
        summary=report(f"{RESULTS}/recommendations/summary.json", caption="../report/rank_summary.rst",
                       category="5. Recommendations"),
        known=f"{RESULTS}/recommendations/known_matches.csv",
        nan=f"{RESULTS}/recommendations/nan_scores.csv",
        per_sweep=f"{RESULTS}/recommendations/counts_per_sweep.csv",
        mosaic=report(f"{RESULTS}/recommendations/mosaic.png", caption="../report/mosaic.rst",
                      category="5. Recommendations"),
    log:
        f"{RESULTS}/logs/rank.log",
    params:
        catalogs=config["lens_catalogs"],
        catalog_versions=catalog_versions(config["lens_catalogs"]),
        rank=config["rank"],
    resources:
        mem_mb=16000,
        runtime=60,
    conda:
        "../../envs/lensfinder.yaml"
    script:
        "../scripts/rank.py"

# The labelled training set (lensfinder.trainset): gathers every sweep's objects and cutouts.
# They are ancient(): an updated sweep re-runs its own select/cutouts/infer and the ranking,
# but does not redraw the training sample and retrain (force that with -R trainset); a
# changed lens catalogue does rebuild the training set and everything after it.


rule trainset:
    input:
        objects=ancient(expand(f"{RESULTS}/objects/{{sweep}}.parquet", sweep=SWEEPS)),
        cutouts=ancient(expand(f"{RESULTS}/cutouts/{{sweep}}/manifest.json", sweep=SWEEPS)),
        catalogs=catalog_input_files(config["lens_catalogs"]),
        extra=trainset_extra_inputs(),
    output:
        labels=f"{RESULTS}/trainset/labels.parquet",
        cutouts=f"{RESULTS}/trainset/cutouts.npy",
        exclusions=f"{RESULTS}/trainset/exclusions.parquet",
        review=f"{RESULTS}/trainset/review.csv",
        review_mosaic=f"{RESULTS}/trainset/review.png",
        summary=f"{RESULTS}/trainset/summary.json",
        summary_table=report(f"{RESULTS}/trainset/summary.csv", caption="../report/trainset_table.rst",
                             category="2. Training set"),
        summary_plot=report(f"{RESULTS}/trainset/summary.png", caption="../report/trainset_summary.rst",
                            category="2. Training set"),
    log:
        f"{RESULTS}/logs/trainset.log",
    params:
        catalogs=config["lens_catalogs"],
        catalog_versions=catalog_versions(config["lens_catalogs"]),
        # the injection section only when trainset.injections adds injected positives (no re-run otherwise)
        trainset={**config["trainset"], **({"injection": config.get("injection") or {}}
                                          if config["trainset"].get("injections") else {})},
    resources:
        mem_mb=16000,
        runtime=120,
    conda:
        "../../envs/lensfinder.yaml"
    script:
        "../scripts/trainset.py"

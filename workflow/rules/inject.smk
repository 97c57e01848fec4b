# Injections (lensfinder.injection): simulated lenses painted onto real cutouts of deflectors
# outside the training set, and scored by every network; the selection function
# (selection_function.smk) measures how many the search recovers.
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

# Self-supervised search (lensfinder.embed, paper S22): MoCo v2 pretraining, representations of every object,
# a Faiss similarity index, candidates from the catalogued lenses, and a linear probe.
# The pretraining reads every sweep's cutouts as ancient() inputs, like the training set:
# an updated sweep re-embeds its own objects, it does not retrain the encoder.

EMBED_REPORT = "8. Self-supervised (S22)"


rule pretrain:
    input:
        manifests=ancient(expand(f"{RESULTS}/cutouts/{{sweep}}/manifest.json", sweep=SWEEPS)),
        objects=ancient(expand(f"{RESULTS}/objects/{{sweep}}.parquet", sweep=SWEEPS)),
    output:
        encoder=f"{EMBED}/encoder/encoder.pt",
        metrics=f"{EMBED}/encoder/metrics.csv",
        sample=f"{EMBED}/encoder/sample.parquet",
        curves=report(f"{EMBED}/encoder/curves.png", caption="../report/embed_pretrain.rst", category=EMBED_REPORT,
                      labels={"figure": "pretraining"}),
        sample_plot=report(f"{EMBED}/encoder/sample.png", caption="../report/embed_sample.rst", category=EMBED_REPORT,
                           labels={"figure": "pretraining sample"}),
    log:
        f"{RESULTS}/logs/pretrain.log",
    params:
        settings=json.dumps(config["embed"]["pretrain"]),
        out=lambda wc, output: os.path.dirname(output.encoder),
        per_node=per_node_launch,
    threads: 1  # the mock's small encoder trains fastest on one core (profiles/slurm: a whole GPU node)
    resources:
        mem_mb=32000,
        runtime=480,
    conda:
        "../../envs/lensfinder.yaml"
    shell:
        "{params.per_node}python -m lensfinder.embed.launch --nproc auto --manifests {input.manifests} --objects {input.objects}"
        " --settings {params.settings:q} --out {params.out} --threads {threads} > {log} 2>&1"


rule embed:  # one job per batch of sweeps (infer.sweeps_per_job), one encoder load
    input:
        manifests=batch_files(f"{RESULTS}/cutouts/{{sweep}}/manifest.json"),
        encoder=f"{EMBED}/encoder/encoder.pt",
    output:
        vectors=f"{EMBED}/representations/{{batch}}.npy",
        index=f"{EMBED}/representations/{{batch}}.parquet",
    log:
        f"{RESULTS}/logs/embed/{{batch}}.log",
    params:
        batch_size=config["embed"]["batch_size"],
        sweeps=batch_sweeps,
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    conda:
        "../../envs/lensfinder.yaml"
    script:
        "../scripts/embed.py"


rule similarity_index:
    input:
        vectors=expand(f"{EMBED}/representations/{{batch}}.npy", batch=BATCHES),
        index=expand(f"{EMBED}/representations/{{batch}}.parquet", batch=BATCHES),
    output:
        faiss=f"{EMBED}/index/index.faiss",
        vector_keys=f"{EMBED}/index/keys.parquet",
        info=report(f"{EMBED}/index/index.json", caption="../report/embed_index.rst", category=EMBED_REPORT,
                    labels={"table": "similarity index"}),
    log:
        f"{RESULTS}/logs/similarity_index.log",
    params:
        index=config["embed"]["index"],
    threads: 2
    resources:
        mem_mb=32000,
        runtime=240,
    conda:
        "../../envs/lensfinder.yaml"
    script:
        "../scripts/similarity_index.py"


rule similar_candidates:
    input:
        info=f"{EMBED}/index/index.json",
        faiss=f"{EMBED}/index/index.faiss",
        objects=expand(f"{RESULTS}/objects/{{sweep}}.parquet", sweep=SWEEPS),
        catalogs=catalog_input_files(config["lens_catalogs"]),
    output:
        parquet=f"{EMBED}/candidates.parquet",
        csv=report(f"{EMBED}/candidates.csv", caption="../report/embed_candidates.rst", category=EMBED_REPORT,
                   labels={"table": "similarity candidates"}),
        fits=f"{EMBED}/candidates.fits",
        known=f"{EMBED}/candidates_known_matches.csv",
        summary=f"{EMBED}/candidates_summary.json",
    log:
        f"{RESULTS}/logs/similar_candidates.log",
    params:
        catalogs=config["lens_catalogs"],
        catalog_versions=catalog_versions(config["lens_catalogs"]),
        similar=config["embed"]["similar"],
    resources:
        mem_mb=16000,
        runtime=60,
    conda:
        "../../envs/lensfinder.yaml"
    script:
        "../scripts/similar_candidates.py"


rule probe:
    input:
        labels=f"{RESULTS}/trainset/labels.parquet",
        cutouts=f"{RESULTS}/trainset/cutouts.npy",
        encoder=f"{EMBED}/encoder/encoder.pt",
        vectors=expand(f"{EMBED}/representations/{{batch}}.npy", batch=BATCHES),
        index=expand(f"{EMBED}/representations/{{batch}}.parquet", batch=BATCHES),
    output:
        model=f"{EMBED}/probe/probe.npz",
        info=f"{EMBED}/probe/probe.json",
        trainset_scores=f"{EMBED}/probe/trainset_scores.parquet",
        scores=expand(f"{EMBED}/probe/scores/{{batch}}.parquet", batch=BATCHES),
    log:
        f"{RESULTS}/logs/probe.log",
    params:
        # the probe's own settings: in_ensemble is the workflow's switch and must not re-fit it
        probe={k: v for k, v in config["embed"]["probe"].items() if k != "in_ensemble"},
    threads: 2
    resources:
        mem_mb=16000,
        runtime=60,
    conda:
        "../../envs/lensfinder.yaml"
    script:
        "../scripts/probe.py"


rule embed_summary:
    input:
        info=f"{EMBED}/index/index.json",
        faiss=f"{EMBED}/index/index.faiss",
        catalogs=catalog_input_files(config["lens_catalogs"]),
        truth=config["evaluation"]["truth"] or [],
        probe_scores=expand(f"{EMBED}/probe/scores/{{batch}}.parquet", batch=BATCHES),
        probe_info=f"{EMBED}/probe/probe.json",
        objects=expand(f"{RESULTS}/objects/{{sweep}}.parquet", sweep=SWEEPS),
        manifests=expand(f"{RESULTS}/cutouts/{{sweep}}/manifest.json", sweep=SWEEPS),
        labels=f"{RESULTS}/trainset/labels.parquet",
        rank_summary=f"{RESULTS}/recommendations/summary.json",
        networks=f"{RESULTS}/evaluation/metrics.json",
    output:
        summary=report(f"{EMBED}/summary.json", caption="../report/embed_summary.rst", category=EMBED_REPORT,
                       labels={"table": "summary"}),
        enrichment=report(f"{EMBED}/enrichment.csv", caption="../report/embed_enrichment.rst", category=EMBED_REPORT,
                          labels={"table": "enrichment"}),
        comparison=report(f"{EMBED}/probe_vs_networks.csv", caption="../report/embed_probe.rst", category=EMBED_REPORT,
                          labels={"table": "probe vs networks"}),
        enrichment_plot=report(f"{EMBED}/enrichment.png", caption="../report/embed_enrichment.rst",
                               category=EMBED_REPORT, labels={"figure": "enrichment"}),
        probe_plot=report(f"{EMBED}/probe.png", caption="../report/embed_probe.rst", category=EMBED_REPORT,
                          labels={"figure": "probe vs networks"}),
        neighbours=report(f"{EMBED}/neighbours.png", caption="../report/embed_neighbours.rst", category=EMBED_REPORT,
                          labels={"figure": "neighbours"}),
    log:
        f"{RESULTS}/logs/embed_summary.log",
    params:
        catalogs=config["lens_catalogs"],
        catalog_versions=catalog_versions(config["lens_catalogs"]),
        similar=config["embed"]["similar"],
        evaluation=config["evaluation"],
    resources:
        mem_mb=16000,
        runtime=60,
    conda:
        "../../envs/lensfinder.yaml"
    script:
        "../scripts/embed_summary.py"


rule probe_injections:  # only when embed.probe.in_ensemble: the probe scores the selection function's injections
    input:
        manifest=f"{RESULTS}/injections/manifest.json",
        encoder=f"{EMBED}/encoder/encoder.pt",
        probe=f"{EMBED}/probe/probe.npz",
    output:
        f"{RESULTS}/injections/scores/probe.parquet",
    log:
        f"{RESULTS}/logs/infer_injections/probe.log",
    params:
        batch_size=config["embed"]["batch_size"],
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    conda:
        "../../envs/lensfinder.yaml"
    script:
        "../scripts/probe_injections.py"

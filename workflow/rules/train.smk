# Training (lensfinder.nets): one job per model, data-parallel over the GPUs of one node
# (torchrun), or of several (an `mpi` resource in the profile: one launcher per node); one
# process on a CPU.
# A SLURM profile maps the resources below to A100 nodes.


rule train:
    input:
        labels=f"{RESULTS}/trainset/labels.parquet",
        cutouts=f"{RESULTS}/trainset/cutouts.npy",
    output:
        best=f"{RESULTS}/models/{{model}}/best.pt",
        last=f"{RESULTS}/models/{{model}}/last.pt",
        metrics=f"{RESULTS}/models/{{model}}/metrics.csv",
        curves=report(f"{RESULTS}/models/{{model}}/curves.png", caption="../report/curves.rst",
                      category="3. Training", subcategory="{model}", labels={"model": "{model}", "figure": "curves"}),
        roc_pr=report(f"{RESULTS}/models/{{model}}/roc_pr.png", caption="../report/roc_pr.rst",
                      category="3. Training", subcategory="{model}", labels={"model": "{model}", "figure": "ROC/PR"}),
    log:
        f"{RESULTS}/logs/train/{{model}}.log",
    params:
        model=lambda wc: json.dumps(config["models"][wc.model]["model"]),
        train=lambda wc: json.dumps(config["models"][wc.model].get("train", {})),
        trainset=lambda wc, input: os.path.dirname(input.labels),
        out=lambda wc, output: os.path.dirname(output.best),
        per_node=per_node_launch,
    threads: 2
    resources:
        mem_mb=32000,
        runtime=240,
    conda:
        "../../envs/lensfinder.yaml"
    shell:
        "{params.per_node}python -m lensfinder.nets.launch --nproc auto --trainset {params.trainset} --model {params.model:q}"
        " --train {params.train:q} --out {params.out} --threads {threads} > {log} 2>&1"

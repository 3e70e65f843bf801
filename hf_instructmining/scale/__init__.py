"""Scale out: score, label and search on a Ray cluster, or on every GPU of one machine.

- [`score_with_ray`] (`ray_scoring`): Ray Data `map_batches` over an actor pool (one model load per actor), KNN
  as a distributed embed step and one exact search step; reads and writes a `datasets.Dataset` or parquet.
- [`run_labeling_with_ray`] (`ray_labeling`): one Ray task per subset (one finetuning per GPU), into the same
  `LabelStore`; [`search_subset_size_with_ray`]: the subset-size search with each finetuning trial a Ray task.
- [`score_on_gpus`] (`multi_gpu`): one machine, several GPUs, no Ray: `Dataset.map(num_proc=n_gpus, with_rank=True)`.

Ray is started by the user's cluster (`ray.init(address=...)`) or locally by `ray.init()`; these functions only
submit work to it. The top-level package exports the names lazily: importing it imports neither ray nor torch.
"""

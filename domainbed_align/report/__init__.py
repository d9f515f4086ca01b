"""Everything that turns a sweep folder into tables, figures and a browsable page (no torch).

Modules by concept, each importing only the ones above it in this list:

- `names`: metric names and directions, dataset/algorithm order, column names;
- `cache`: the collector's cache of parsed records (`_collect_cache.npz`);
- `records`: reading results.jsonl tolerantly (the one record parser) and the `Sweep`;
- `selected`: model selection per method with each selected model's metrics attached;
- `comparisons`: paired differences between algorithms;
- `tables`: the text / LaTeX / markdown report (`Report`);
- `grid`, `draw`, `figures`: figure data, drawing, the sweep figures;
- `saliency`, `curves`, `runs`: saliency grids, learning curves, the run list with states;
- `html`: one self-contained page per sweep.

`collect_results` and `figures` (one level up) are the command-line entry points.
"""

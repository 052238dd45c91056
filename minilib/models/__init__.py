"""Model families and what depends on them: where the FFN neurons live, hooks, surgery, loading."""

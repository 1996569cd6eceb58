"""Generated inputs (hypothesis strategies) for the properties of the SSE encoding and the
cache key."""

from __future__ import annotations

from hypothesis import strategies as st

# any Unicode text a model could emit, lone surrogates excepted (they are not valid UTF-8)
texts = st.text(st.characters(exclude_categories=["Cs"]))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)

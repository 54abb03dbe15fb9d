"""Client-side refusals that match what the served runtimes answer with invalid-argument (issue 17, items 7-8):
nothing that the server would refuse, or that Triton 2.51's JSON parser would answer with 500, is sent."""
from __future__ import annotations

import numpy as np
import pytest

from clients.errors import InvalidRequest
from clients.inputs import prepare
from tests.clients.test_inputs_results import IMAGE, TEXT, images


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_floats_are_refused_before_sending(bad):
    x = images(2)
    x[1, 0, 3, 4] = bad
    with pytest.raises(InvalidRequest, match=r"input 'image' holds NaN or Inf \(first at index \[1, 0, 3, 4\]\)"):
        prepare(IMAGE, x)
    with pytest.raises(InvalidRequest, match="NaN or Inf"):
        prepare(IMAGE, x.tolist())  # lists too, after conversion to the model's datatype
    assert prepare(IMAGE, x, validate=False)[1] == 2  # validate_inputs=False sends it as it is


@pytest.mark.parametrize("texts, index", [("", 0), (["refund please", "  \n"], 1)])
def test_empty_texts_are_refused_before_sending(texts, index):
    with pytest.raises(InvalidRequest, match=f"text {index} is empty: model 'textclf_text' needs at least one "
                                             "non-space character"):
        prepare(TEXT, texts)

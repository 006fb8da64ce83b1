"""The README's transformer capture and intervention example runs as written and says what it prints."""

import re

from test_readme import _block


def test_transformer_capture_and_intervention_example_runs(capsys):
    exec(compile(_block("Capture a transformer and intervene"), "README: transformer capture", "exec"), {})
    shapes, change = capsys.readouterr().out.strip().splitlines()
    assert shapes == ("{'Block_0': (48, 3, 32), 'Block_0/Attention_0/softmax:post': (48, 2, 3, 3), "
                      "'Block_0/mlp_in/gelu': (48, 3, 64), 'Block_0/mlp_in/gelu:post': (48, 3, 64)}")
    value = float(re.fullmatch(r"mean \|change in logits\|: (\S+)", change).group(1))
    assert value > 0  # projecting out a direction the MLP writes along changes the output

"""Assertions shared by the sharded-equals-one-process tests (a uniquely named module:
`from conftest import` would find whichever tests/*/conftest.py is first on sys.path)."""

import torch


def assert_shards_equal_one_process(results: list, out, grad_x, grads: dict) -> None:
    """Per-rank (output rows, input-gradient rows, {parameter: gradient}) against one
    process's: rows concatenate in rank order, parameter gradients sum over ranks (float64
    tolerances)."""
    torch.testing.assert_close(torch.cat([o for o, _, _ in results], 1), out,
                               rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(torch.cat([g for _, g, _ in results], 1), grad_x,
                               rtol=1e-9, atol=1e-11)
    for k, g in grads.items():
        torch.testing.assert_close(sum(res[2][k] for res in results), g, rtol=1e-9,
                                   atol=1e-11, msg=k)

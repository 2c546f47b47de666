"""Built-in neural-process models; importing this package registers them."""

from approxeq.np.models import cnp, convcnp, pt_tnp, relaxed_convcnp, te_tnp, tnp  # noqa: F401

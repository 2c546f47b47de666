"""Built-in neural-process models; importing this package registers them."""

from approxeq.np.models import (cnp, convcnp, e_tnp, equivcnp, lps_tnp, pt_tnp,  # noqa: F401
                                relaxed_convcnp, te_tnp, tnp)

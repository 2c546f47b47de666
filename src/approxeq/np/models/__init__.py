"""Built-in neural-process models; importing this package registers them."""

from approxeq.np.models import (  # noqa: F401
                                cnp,
                                convcnp,
                                e_tnp,
                                equivcnp_build,
                                lps_build,
                                pt_tnp,
                                relaxed_convcnp,
                                te_tnp,
                                tnp,
)

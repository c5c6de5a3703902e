"""One urllib opener for the launcher's own calls to Triton and the adapter: it never uses a proxy.

`urllib.request.urlopen` honours `http_proxy`; the supervisor's calls carry Triton's admin key, which
a proxy named in the environment would then receive. These calls go to loopback or to the stack's
own hosts, never through a proxy.
"""

from __future__ import annotations

import urllib.request

DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))

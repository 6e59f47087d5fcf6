"""Run one function inside a real Odoo registry, in Odoo's own Python: ``python tools/odoo_exec.py '<json>'``.

Started by tools/odoo_harness.py, never imported by the addon. The JSON names the database, the addons path,
the target ``package.module:function`` (imported from this repository) and its keyword arguments. The function
gets an ``env`` (superuser) and its JSON-able result is printed after RESULT_MARKER; the transaction is
committed when it returns, rolled back when it raises.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import sys
import traceback

RESULT_MARKER = "@@odoo_exec_result@@ "


def main() -> int:
    job = json.loads(sys.argv[1])
    import odoo
    from odoo.modules.registry import Registry
    from odoo.tools import config

    config.parse_config(
        [
            f"--database={job['db']}",
            "--db_host=127.0.0.1",
            f"--db_user={job.get('db_user', 'root')}",
            f"--addons-path={job['addons_path']}",
            f"--log-level={job.get('log_level', 'warn')}",
            *job.get("odoo_args", []),
        ]
    )
    module_name, function_name = job["target"].split(":")
    function = getattr(importlib.import_module(module_name), function_name)
    registry = Registry(job["db"])
    # 14.0 keeps its environments in a context that Environment.manage() opens; 15.0 made it a no-op, 17.0
    # removed it.
    manage = getattr(odoo.api.Environment, "manage", contextlib.nullcontext)
    try:
        with manage(), registry.cursor() as cr:
            env = odoo.api.Environment(cr, odoo.SUPERUSER_ID, {})
            result = function(env, **job.get("kwargs", {}))
    except Exception:
        traceback.print_exc()
        return 1
    print(RESULT_MARKER + json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m tuitrain.train.torchrun ARGS``: torch's launcher, ``torch.distributed.run``, as is.

Two differences, both about how it ends:

* Stopped by a signal (Ctrl-C is how a data-parallel run is stopped; see :mod:`tuitrain.launch`),
  torchrun waits for the ranks to close their run file, then raises and prints a 30-line traceback
  that reads like a crash. Here it exits quietly with the shell's 128 + signal code.
* When ranks fail, torchrun exits 1 whatever they said. Here it exits with rank 0's code (else the
  first failure's), so that ``tuitrain run --nproc-per-node N`` keeps the single-process meaning of
  2 (bad input, e.g. CIFAR missing) and 130 (stopped). Its failure report is printed only when a
  rank died without telling why itself (killed by a signal: no tuitrain message, no traceback).
"""

from __future__ import annotations

import sys

from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import main

TUITRAIN_EXIT_CODES = (1, 2, 130)  # failed (traceback printed), bad input (message printed), stopped


def _exit_code(e: ChildFailedError) -> int:
    failure = e.failures.get(0) or e.get_first_failure()[1]
    if any(f.exitcode not in TUITRAIN_EXIT_CODES for f in e.failures.values()):
        print(e.format_msg(), file=sys.stderr)
    return failure.exitcode if failure.exitcode in TUITRAIN_EXIT_CODES else 1


if __name__ == "__main__":
    try:
        main()
    except SignalException as e:
        sys.exit(128 + int(e.sigval))
    except ChildFailedError as e:
        sys.exit(_exit_code(e))

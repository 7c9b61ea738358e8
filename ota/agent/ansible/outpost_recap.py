# Outpost's Ansible callback: writes the outcome of every task per play and
# host, and the final recap, as JSON to the file named by OUTPOST_RECAP_FILE.
# The shape is that of ansible.posix's json callback ("plays", "stats"), but
# this is an aggregate callback: the stdout callback stays Ansible's default,
# so people read the usual output while the agent reads this file, whatever
# the size of the output. It needs only ansible-core (2.11 or later).
from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os

from ansible.plugins.callback import CallbackBase


def _rescued(task):
    # A failure is rescued when an enclosing block has a rescue section and
    # the task sits in that block's main part.
    child, parent = task, getattr(task, '_parent', None)
    while parent is not None:
        rescue, block = getattr(parent, 'rescue', None), getattr(parent, 'block', None)
        if rescue and block and any(getattr(c, '_uuid', None) == getattr(child, '_uuid', 0) for c in block):
            return True
        child, parent = parent, getattr(parent, '_parent', None)
    return False


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'outpost_recap'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super(CallbackModule, self).__init__(*args, **kwargs)
        self.plays = []

    def v2_playbook_on_play_start(self, play):
        self.plays.append({'play': {'name': play.get_name()}, 'tasks': []})

    def v2_playbook_on_task_start(self, task, is_conditional):
        if self.plays:
            self.plays[-1]['tasks'].append({'task': {'name': task.get_name()}, 'hosts': {}})

    def v2_playbook_on_handler_task_start(self, task):
        self.v2_playbook_on_task_start(task, False)

    def _record(self, result, **outcome):
        if not self.plays or not self.plays[-1]['tasks']:
            return
        r = result._result if isinstance(result._result, dict) else {}
        entry = {'changed': bool(r.get('changed', False))}
        entry.update(outcome)
        if outcome.get('failed') or outcome.get('unreachable'):
            msg = r.get('msg') or r.get('stderr') or r.get('reason')
            if msg:
                entry['msg'] = str(msg)[:4096]
        self.plays[-1]['tasks'][-1]['hosts'][result._host.get_name()] = entry

    def v2_runner_on_ok(self, result):
        self._record(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        rescued = False
        if not ignore_errors:
            try:
                rescued = _rescued(result._task)
            except Exception:
                rescued = False
        self._record(result, failed=True, ignore_errors=bool(ignore_errors), rescued=rescued)

    def v2_runner_on_unreachable(self, result):
        self._record(result, unreachable=True)

    def v2_runner_on_skipped(self, result):
        self._record(result, skipped=True)

    def v2_playbook_on_stats(self, stats):
        path = os.environ.get('OUTPOST_RECAP_FILE')
        if not path:
            return
        summary = dict((h, stats.summarize(h)) for h in sorted(stats.processed.keys()))
        tmp = path + '.tmp'
        with open(tmp, 'w') as f:
            json.dump({'plays': self.plays, 'stats': summary}, f)
        os.rename(tmp, path)

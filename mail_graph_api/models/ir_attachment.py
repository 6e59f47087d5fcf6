# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl-3.0).
import os

from odoo import models

from .. import deferred


class IrAttachment(models.Model):
    _inherit = "ir.attachment"

    def _file_read(self, fname, *args, **kwargs):
        """While a mail is prepared for a Graph session, a large file is handed out as a stand-in: the session
        uploads it from the filestore in chunks instead of Odoo loading and encoding it (see ``deferred``)."""
        threshold = deferred.threshold()
        if threshold and len(self) == 1 and (self.file_size or 0) >= threshold:
            if not (self.mimetype or "").startswith("message/"):  # Odoo parses attached mails: keep them
                path = self._full_path(fname)
                if os.path.isfile(path) and os.path.getsize(path) == self.file_size:
                    deferred.note_handed_out(self.id)
                    return deferred.stand_in(path, self.file_size)
        return super()._file_read(fname, *args, **kwargs)

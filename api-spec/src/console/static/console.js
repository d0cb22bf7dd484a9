// Edict console: the live preview of a rule's rendered section (no inline script; see the ADR 0028).
"use strict";

"""The built-in prompt-injection detector: a phrase and pattern pack scored on one text.

`injection_score(text, source=...)` reads a user turn ("user": direct injection and jailbreaks) or a tool
result or retrieved document ("tool": indirect injection, where instructions addressed to the assistant
hide in data) and answers a score from 0 to 1 and the names of the patterns that fired, never the text
they matched. The guardrails engine (routing.policies.guardrails) compares the score with the check's
threshold.

How a text is read:
- Normalized first: NFKC, invisible characters dropped and odd spaces folded (the PII scan's
  `pasted_form`), lower-cased, digits used as letters ("1gn0re") folded, Cyrillic or Greek look-alikes
  folded to Latin inside words that mix scripts, letters spaced out ("i g n o r e") joined, whitespace
  collapsed. Rules allow a little punctuation between words ("ignore.previous_instructions").
- Families of rules: instruction override, role hijack and jailbreak, authority claims, system-prompt
  extraction, fake delimiters and chat-template tokens, encoded payloads (base64 runs are decoded and read
  again), and in tool results: instructions addressed to the assistant, concealment from the user,
  exfiltration to an address, actions the assistant is told to take.
- Mention is not use: a match inside quotation marks or a code span, after "phrases like" or a negation,
  or in a sentence that talks about it ("what is", "explain", "our filter should detect") counts for
  little, unless it stands where an imperative addressed to the model would ("... and ignore all previous
  instructions").
- Score: evidence is grouped into clusters of nearby matches (CLUSTER_GAP): a planted instruction is one
  paragraph, and weak hints scattered over a long document are not one attack. In a cluster each family
  counts with its strongest live match and families combine as independent evidence, 1 - prod(1 - w);
  mentions add at most MENTION_CAP, so a write-up quoting every attack in the book stays under the default
  threshold of 0.5. The text scores as its worst cluster. One blatant attack scores about 0.9, a weak hint
  0.3 to 0.5, two families together more than either.

Cost: a stdlib `re` alternation of every rule would try every branch at every position (several ms per KB).
Instead each rule starts with literal lead words; one trie-shaped pattern per source finds the lead words
(CPython skips in C to the characters that can start a word, then branches on one character at a time),
and only the rules of the word found are tried there, anchored. Work per text is linear; the matches
examined per text are bounded by MAX_MATCHES, the base64 runs decoded by MAX_BASE64_RUNS.
"""

from __future__ import annotations

import binascii
import re
import unicodedata
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

# pasted_form's own definitions of invisible characters and odd spaces, applied here in C: pasted_form walks a
# text one character at a time (to map offsets, which a score does not need) whenever one of them occurs.
from routing.policies.engine import _INVISIBLE, _SPACES

USER = "user"
TOOL = "tool"
SOURCES = (USER, TOOL)

# All mentions in a cluster (quoted, discussed) add at most this much: under the default threshold, so that
# a security write-up is not blocked, yet above zero, so that a mention plus a weak live hint can cross it.
MENTION_CAP = 0.3
MENTION_FACTOR = 0.35
# Matches further apart than this (in characters) are separate pieces of evidence, scored apart.
CLUSTER_GAP = 600
# Rule matches examined per text. A text with more is not a discussion: the rest is not read, and the text
# gets the "volume" signal.
MAX_MATCHES = 400
VOLUME_WEIGHT = 0.6
# Base64 runs decoded per text (the first ones of mixed case, up to 4 KB decoded each): enough for a planted
# payload, bounded for a tool result full of image data.
MAX_BASE64_RUNS = 8
BASE64_MIN = 24
BASE64_READ = 4096
# Addresses (URLs, e-mail domains) looked behind for an exfiltration request, per text.
MAX_ADDRESSES = 32
# How far back the mention test reads: the sentence and line a match stands in.
LOOKBACK = 320
# Letters spaced out, reversed or ROT13 words: how such an obfuscation counts on its own (the words it hides are
# read as well, and count with their own weight).
SPACED_WEIGHT = 0.25
HIDDEN_FORM_WEIGHT = 0.5


@dataclass(frozen=True, slots=True)
class InjectionVerdict:
    score: float  # 0.0 .. 1.0
    signals: tuple[str, ...]  # names of the patterns/families that fired (never the matched text)


@dataclass(frozen=True, slots=True)
class _Rule:
    signal: str  # "family.name": families combine, rules of one family do not
    leads: str  # the literal words a match starts with, ", " between them
    rest: str  # the pattern after the lead; a space stands for a separator (SEP), " ?" for an optional one
    user: float  # weight in a user turn; 0: not looked for there
    tool: float  # weight in a tool result or retrieved document
    word_end: bool = True  # the match must end at a word boundary


# Between two words: a space or newline, or the punctuation people obfuscate with ("ignore_all",
# "ignore.previous", "ignore--all"). \x20 rather than a space: the builder replaces spaces.
SEP = r"[\x20\n_*~.\-]{1,3}"

# --- Vocabulary shared by several rules -----------------------------------------------------------------------
_OVERRIDE = "ignore, ignoring, disregard, disregarding, forget, forgetting, override, overrides, overrule, overlook, bypass, discard, abandon, neglect, set aside, supersede, supersedes, do not follow, don't follow, dont follow, stop following, no longer follow, never follow, do not obey, don't obey, dont obey, stop obeying, no longer obey, do not listen to, don't listen to, stop listening to"
# "my previous instructions" is a person correcting their own request: not in _DET.
_DET = r"(?:(?:all|any|every|each|the|these|those|your|ur|of|its|and) ){0,4}"
_QUAL = (
    r"(?:previous|previously given|prior|above|earlier|preceding|foregoing|former|original|initial|existing|"
    r"old|current|system|developer|default|given|preprogrammed|pre-programmed|built-in|hidden|safety|other)"
)
_NOUN = (
    r"(?:instructions?|rules?|directions?|directives?|prompts?|guidelines?|guidance|commands?|orders?|"
    r"constraints?|restrictions?|limitations?|policies|policy|programming|training|safeguards?|"
    r"guardrails?|filters?|protocols?|criteria)"
)
_LIMITS = (
    r"(?:rules|restrictions|limits|limitations|filters|guidelines|content polic(?:y|ies)|policies|censorship|"
    r"ethical (?:guidelines|constraints|restrictions|boundaries)|moral (?:guidelines|constraints)|morals|ethics|"
    r"boundaries|safeguards|guardrails|programming|(?:content )?moderation|safety (?:training|features|filters))"
)
# A weak "you have no rules" stays silent when the rules are scoped to something harmless.
_SCOPED = r"(?! on (?:the )?(?:length|word|words|size|format|formatting|style|tone|time|number|budget|topic))"
_AI = (
    r"(?:ai|a\.i\.|llms?|language models?|large language models?|assistants?|ai assistants?|ai models?|ai agents?|"
    r"chatbots?|gpts?|chatgpt|claude|gemini|copilot|ai systems?|ai tools?|summarizers?|ai crawlers?)"
)
_AI_LEADS = "ai, a.i., llm, llms, language model, language models, large language model, large language models, assistant, assistants, ai assistant, ai assistants, ai model, ai models, ai agent, ai agents, chatbot, chatbots, gpt, gpts, chatgpt, claude, gemini, copilot, ai system, ai systems, summarizer, summarizers"
_AI_SUBJECT = "assistant, ai, a.i., llm, chatbot, language model, ai model, ai assistant, ai agent"
_STRONG_PROMPT = (
    r"(?:system prompt|system-prompt|sys prompt|system message|system instructions?|initial (?:instructions|prompt)|"
    r"original (?:instructions|prompt)|hidden (?:instructions|prompt|rules|message)|secret (?:instructions|prompt|rules)|"
    r"developer (?:message|prompt|instructions)|pre-?prompt|meta-?prompt|custom instructions|"
    r"(?:instructions|prompt|rules) you were given)"
)
_WEAK_PROMPT = r"(?:prompt|instructions|rules|guidelines|configuration|config|directives)"
_ADJ = r"(?:(?:full|entire|complete|exact|original|whole|verbatim|actual|real|hidden|secret|initial|underlying|current|first) ){0,3}"
_EXTRACT_HARD = "reveal, print, repeat, output, dump, leak, disclose, expose, recite, spell out, type out, write out, copy, paste, echo, quote, read back, read out, reproduce, regurgitate"
_EXTRACT_SOFT = "show, display, tell me, tell us, give me, send me, share, list, provide, summarize, summarise, translate, paraphrase, encode, return, what's, what is, what are, what was, what were, explain"
_EXTRACT = f"{_EXTRACT_HARD}, {_EXTRACT_SOFT}"
_PERSONA = "you are, you're, act as, acting as, become, pretend to be, pretend you are, pretend you're, roleplay as, role-play as, play, simulate, imagine you are, imagine you're, you will be, you'll be, respond as, answer as, behave as, behave like, act like"
_PRETEND = "pretend, imagine, suppose, assume, act like, act as if, act as though, behave as if"
_SAFETY_OFF = "disable, disabling, turn off, turning off, switch off, deactivate, remove, removing, lift, circumvent, evade, suspend, get around, work around, unlock, break"
_NEGATIONS = "do not, don't, dont, never, without, must not, should not"

_RULES: tuple[_Rule, ...] = (
    # --- instruction override ---------------------------------------------------------------------------------
    _Rule("override.ignore_prior", _OVERRIDE, rf" {_DET}(?:{_QUAL} ){{1,2}}{_NOUN}", 0.9, 0.92),
    _Rule(
        "override.ignore_yours",
        _OVERRIDE,
        rf" (?:(?:all|any|each|every) )?(?:of )?(?:your|ur|its) (?:\w+ )?{_NOUN}",
        0.88,
        0.9,
    ),
    _Rule("override.ignore_all", _OVERRIDE, rf" (?:all|any|every) (?:of )?(?:the )?{_NOUN}", 0.8, 0.85),
    _Rule(
        "override.ignore_given",
        _OVERRIDE,
        rf" {_DET}(?:\w+ )?{_NOUN} (?:that came before|that came earlier|that (?:were|was) given|"
        r"you (?:were|have been|got|received) given|you (?:were|have been) given|you got|you received|given to you|"
        r"above|before this|so far|until now|up to now|from before|previously)",
        0.88,
        0.92,
    ),
    _Rule(
        "override.ignore_above_and",
        _OVERRIDE,
        r" (?:all |everything |anything )?(?:of )?(?:the |what(?:'s| is| was)? (?:written |said |stated )?)?"
        r"(?:above|before)(?: (?:this|that) (?:line|message|point))?[,.;:!]? (?:and |then |and then |but |now )?"
        r"(?:instead )?(?:just |only )?(?:say|print|write|output|respond|reply|tell|answer|repeat|return|act|translate|"
        r"spell|start|begin|type|reveal|show|list|do)",
        0.88,
        0.92,
    ),
    _Rule(
        "override.ignore_above",
        _OVERRIDE,
        r" (?:all |everything |anything )?(?:of )?(?:the |what(?:'s| is| was)? (?:written |said |stated )?)?above",
        0.45,
        0.6,
    ),
    _Rule(
        "override.ignore_yours",
        _OVERRIDE,
        r" (?:what|whatever|everything|anything|all) (?:that )?(?:your|the) (?:programmers?|developers?|creators?|"
        r"makers?|owners?|company|operators?|trainers?|system prompt|instructions|rules) (?:said|say|told you|tell you|"
        r"wrote|want|wanted|gave you|taught you)",
        0.85,
        0.9,
    ),
    _Rule(
        "override.ignore_safety",
        _OVERRIDE,
        r" (?:all |any |your |the )?(?:safety|ethics|morals|morality|guardrails|censorship|content policy|"
        r"content filters?|safety (?:rules|filters|guidelines))(?=[.,;!\n]| and | for | completely| entirely| just| now)",
        0.7,
        0.75,
        word_end=False,
    ),
    _Rule(
        "override.ignore_user",
        _OVERRIDE,
        r" (?:the |what the |whatever the )?user(?:'s|s')? (?:question|request|query|message|instructions|prompt|input|"
        r"wishes|intent|asks?|says|said|wants)",
        0.0,
        0.8,
    ),
    _Rule(
        "override.forget_everything",
        "forget, disregard, ignore, erase, wipe",
        r" (?:about )?(?:everything|all|anything)(?: else)? (?:that )?(?:(?:you|u)(?: were| have been|'ve been| got) "
        r"(?:told|taught|given|instructed|trained)|you know|you learned|you were programmed)",
        0.85,
        0.9,
    ),
    _Rule(
        "override.previous_void",
        "previous, prior, above, earlier, original, old, initial, all, system, existing, your",
        rf"(?: other| your)? (?:{_QUAL} )?{_NOUN} (?:(?:are|is|were|have been|has been)(?: now| hereby)? )?(?:void|null|"
        r"cancell?ed|revoked|overridden|invalid|disabled|suspended|lifted|outdated|obsolete|deprecated|superseded|"
        r"no longer (?:valid|apply|applies|in effect|relevant|active|matter))",
        0.85,
        0.9,
    ),
    _Rule(
        "override.previous_void",
        "you, you've, u",
        r" (?:were |have been |got |been )?(?:told|instructed|asked|programmed|given|trained)[^\n]{0,40}?(?:it's|it is|"
        r"that's|that is|they're|they are|is|are|was|were|has been|have been) (?:now )?(?:all )?(?:cancell?ed|void|null|"
        r"revoked|overridden|invalid|obsolete|outdated|irrelevant|no longer (?:valid|applies|apply|relevant))",
        0.8,
        0.85,
    ),
    _Rule(
        "override.supersede",
        "this, these, following",
        rf" (?:\w+ )?(?:overrides?|supersedes?|replaces?|takes? precedence over|cancels?) {_DET}(?:{_QUAL} )?{_NOUN}",
        0.8,
        0.88,
    ),
    _Rule(
        "override.rules_do_not_apply",
        "your, usual, normal, content, safety, ethical, openai's, anthropic's, all",
        r" (?:\w+ )?(?:rules|restrictions|guidelines|policies|filters|limits|guardrails) (?:do not|don't|no longer|"
        r"will not|won't|cease to) apply",
        0.7,
        0.75,
    ),
    _Rule(
        "override.earlier_was_fake",
        "everything, all, anything, whatever",
        r" (?:(?:written|said|stated|you (?:read|saw)) )?(?:before|above|prior to) (?:this|here|now)(?: \w+)? "
        r"(?:was|is|were) (?:just )?(?:a test|fake|irrelevant|void|null|a joke|not real|wrong|a lie|a decoy)",
        0.7,
        0.8,
    ),
    _Rule(
        "override.real_instructions",
        "real, actual, true",
        r" (?:instructions|task|rules|prompt) (?:begin|start|follow|are as follows|are below|come now|are these)",
        0.7,
        0.8,
    ),
    _Rule(
        "override.new_instructions",
        "new, updated, real, actual, revised",
        r" (?:instructions|system prompt|directives?|orders) ?:",
        0.5,
        0.7,
        word_end=False,
    ),
    _Rule(
        "override.new_instructions",
        "your",
        r" (?:new|real|actual|true|only|updated) (?:instructions?|task|role|goal|objective|purpose|mission|directive|rules?|"
        r"job|persona) (?:is|are|will be|now is|:)",
        0.5,
        0.7,
        word_end=False,
    ),
    _Rule(
        "override.from_now_on",
        "from now on, from this point on, from this point forward, henceforth",
        r",? (?:you are|you're|you will|you'll|you must|you shall|your|you|act|respond|"
        r"answer|reply|do not|don't|never|always|ignore)",
        0.3,
        0.45,
    ),
    _Rule(
        "override.from_now_on",
        "rest",
        r" of (?:this|the|our) (?:conversation|chat|session),? (?:you are|you're|you will|you'll|you must|you shall|your|you|"
        r"act|respond|answer|reply|do not|don't|never|always|ignore)",
        0.3,
        0.45,
    ),
    _Rule(
        "override.multilingual",
        "ignora, ignorar, ignorad, ignore, ignorez, olvida, olvidar, oublie, oubliez, esqueça, esqueca",
        r" (?:(?:todas?|toutes?|tutte|las?|les|as|le|tes|vos|tus|sus) ){0,3}(?:instrucciones|instructions|reglas|"
        r"indicaciones|consignes|règles|instruções|instrucoes|regras|istruzioni|regole) (?:anteriores|previas|précédentes|"
        r"precedentes|antérieures|anterieures|ci-dessus|de arriba|prévias|precedenti|di prima)",
        0.9,
        0.92,
    ),
    _Rule(
        "override.multilingual",
        "ignora, ignorar, olvida, olvidar, oublie, oubliez, ignore, ignorez, esqueça, esqueca, dimentica",
        r" (?:(?:todas?|toutes?|tutte) )?(?:(?:las|les|as|le) )?(?:tus|sus|tes|vos|suas|tuas|tue) (?:instrucciones|reglas|"
        r"restricciones|directrices|instructions|consignes|règles|instruções|regras|istruzioni|regole)",
        0.85,
        0.9,
    ),
    _Rule(
        "override.multilingual",
        "vergiss, ignoriere, vergessen sie, ignorieren sie",
        r" (?:alle )?(?:deine|ihre) (?:anweisungen|regeln|richtlinien|vorgaben)",
        0.85,
        0.9,
    ),
    _Rule(
        "override.multilingual",
        "dimentica, ignora",
        r" (?:tutte )?(?:le )?(?:istruzioni|regole) (?:precedenti|di prima)",
        0.9,
        0.92,
    ),
    _Rule(
        "override.multilingual",
        "negeer, vergeet",
        r" (?:alle |al je |je )?(?:vorige|eerdere|voorgaande|bovenstaande) (?:instructies|regels|opdrachten)",
        0.9,
        0.92,
    ),
    _Rule(
        "override.multilingual",
        "ignoriere, ignorieren sie, ignoriert, vergiss, vergessen sie, missachte",
        r" (?:alle )?(?:deine |ihre |die )?(?:vorherigen|bisherigen|vorigen|obigen|vorangegangenen|früheren|fruheren) "
        r"(?:anweisungen|instruktionen|regeln|befehle|vorgaben)",
        0.9,
        0.92,
    ),
    _Rule(
        "override.multilingual",
        "игнорируй, игнорируйте, проигнорируй, проигнорируйте, забудь, забудьте, не обращай внимания на",
        r" (?:все |всё )?(?:предыдущие|прошлые|прежние|вышеуказанные|предшествующие|свои) (?:инструкции|указания|правила|"
        r"команды)",
        0.9,
        0.92,
    ),
    _Rule(
        "override.multilingual",
        "忽略, 无视, 忘记, 忘掉, 不要理会",
        r"(?:(?:之前|以上|先前|前面|上面|上述|此前)(?:的)?(?:所有|全部)?|(?:所有|全部|一切)(?:之前|先前|以前)?)(?:的)?"
        r"(?:指令|指示|说明|规则|提示|要求)",
        0.9,
        0.92,
        word_end=False,
    ),
    # --- role hijack and jailbreak ----------------------------------------------------------------------------
    _Rule("role.dan", "do anything now", "", 0.85, 0.9),
    _Rule(
        "role.dan",
        "act as, acting as, you are, you're, become, pretend to be, roleplay as, role-play as, play the role of",
        r" (?:now )?(?:a |an |the )?dan",
        0.85,
        0.9,
    ),
    _Rule(
        "role.special_mode",
        "you are, you're, you will be, act as, acting as, simulate, simulating, pretend to be, pretend you are",
        r" (?:now )?(?:in )?(?:an? \w+ (?:with|in) )?(?:developer|dev|god|admin|debug|sudo|unrestricted|jailbreak|"
        r"jailbroken|dan|evil|chaos|maintenance|test|unlocked|root) mode",
        0.85,
        0.9,
    ),
    _Rule(
        "role.special_mode",
        "jailbreak, jailbroken, unrestricted, dan, evil, chaos, unfiltered, uncensored",
        " mode",
        0.75,
        0.8,
    ),
    _Rule("role.special_mode", "developer", r" mode (?:enabled|activated|engaged|output)", 0.6, 0.7),
    _Rule(
        "role.special_mode",
        "unlocked, jailbreak, jailbroken, god, sudo, admin, maintenance, unrestricted, dan, evil, uncensored, unfiltered, root, no-limits, nolimits, freedom",
        r" mode ?(?:is )?:? ?(?:on|enabled|activated|engaged|active|unlocked)",
        0.7,
        0.75,
    ),
    _Rule(
        "role.special_mode",
        "enter, entering, switch to, switch into, activate, enable, turn on, engage, go into, boot into",
        r" (?:the |your )?(?:developer|dev|god|sudo|admin|unlocked|jailbreak|unrestricted|dan|debug|root|maintenance) mode",
        0.45,
        0.5,
    ),
    _Rule(
        "role.unrestricted_ai",
        _PERSONA,
        r" (?:now )?(?:an? |my |the )?(?:completely |totally |fully )?(?:unrestricted|unfiltered|uncensored|unlimited|"
        r"unbound|amoral|unethical|immoral|evil|rogue|jailbroken|unaligned|lawless|unchained|limitless|ruleless|rule-free|"
        r"free|untethered) (?:ai|a\.i\.|assistant|model|chatbot|bot|llm|version|gpt|language model|intelligence|persona|"
        r"character|entity|twin|confidant)",
        0.85,
        0.9,
    ),
    _Rule(
        "role.unrestricted_ai",
        "ai, a.i., assistant, chatbot, bot, llm, gpt, language model, entity, version",
        r"(?: of (?:yourself|you|chatgpt|claude|gpt))? (?:that is |which is |who is )?(?:without|with no|with zero|"
        r"that has no|that doesn't have any|free of|free from|lacking|devoid of) (?:any )?"
        rf"(?:(?:ethical|moral|content|safety)(?: or (?:ethical|moral|content|safety))? )?{_LIMITS}",
        0.8,
        0.85,
    ),
    _Rule(
        "role.unrestricted_ai",
        "ai, a.i., assistant, chatbot, bot, llm, gpt, persona, character, entity, version",
        r" (?:that|who|which) (?:ignores|disregards|bypasses|breaks|doesn't follow|does not follow|never follows|has no|"
        r"is free of|is not bound by) (?:any |all )?(?:of )?(?:openai'?s? |anthropic'?s? |the |its |content |safety |ethical )?"
        r"(?:rules|guidelines|polic(?:y|ies)|restrictions|filters|content policy|ethics|limits|limitations)",
        0.75,
        0.8,
    ),
    _Rule(
        "role.unrestricted_ai",
        "you are, you're, you are now, you're now",
        r" (?:now )?(?:completely |fully |totally )?(?:unrestricted|unfiltered|uncensored|jailbroken|unbound|limitless|"
        r"unchained|amoral)(?=[\s.,;:!?]|$)",
        0.8,
        0.85,
        word_end=False,
    ),
    _Rule(
        "role.dual_persona",
        "censored, filtered, normal, classic, standard, safe, restricted",
        r" (?:one|version|response|answer|ai|mode)?,? and (?:an? |the )?(?:uncensored|unfiltered|jailbroken|dan|unrestricted|"
        r"unsafe|evil)",
        0.65,
        0.7,
    ),
    _Rule(
        "role.dan",
        "ai, a.i., assistant, chatbot, persona, character, entity, llm",
        r"(?: model)? (?:known as|called|named|nicknamed) [\"']?dan",
        0.85,
        0.9,
    ),
    _Rule("role.dan", "immerse yourself", r" (?:into|in) (?:the )?role", 0.45, 0.5),
    _Rule(
        "role.no_rules",
        _PRETEND,
        r" (?:that )?(?:(?:the|your|openai's|anthropic's) )?(?:content polic(?:y|ies)|rules|guidelines|restrictions|filters|"
        r"safety (?:rules|guidelines|filters)|ethics|polic(?:y|ies)) (?:don't|doesn't|do not|does not|no longer|never|"
        r"did not|didn't) (?:exist|apply|matter)",
        0.8,
        0.85,
    ),
    _Rule(
        "role.no_rules",
        _PRETEND,
        rf" (?:that )?there (?:are|is|were|was) no (?:more )?{_LIMITS}",
        0.8,
        0.85,
    ),
    _Rule(
        "role.no_rules",
        _PRETEND,
        rf" (?:that )?you (?:have|had|are under|were under|now have) (?:absolutely )?(?:no|zero) (?:more )?{_LIMITS}",
        0.85,
        0.9,
    ),
    _Rule(
        "role.no_rules",
        _PRETEND,
        r" (?:that )?you (?:didn't have|did not have|don't have|do not have|were without|are without|lack|lacked) "
        rf"(?:any )?{_LIMITS}",
        0.85,
        0.9,
    ),
    _Rule("role.no_rules", "if, hypothetically", rf",? you (?:had|have|were under) no {_LIMITS}", 0.55, 0.6),
    _Rule(
        "role.no_rules",
        "you, you've",
        rf" (?:have |now have |got |have got )?(?:absolutely )?(?:no|zero) {_LIMITS}{_SCOPED}",
        0.7,
        0.75,
    ),
    _Rule(
        "role.no_rules",
        "who, which",
        rf" (?:has|have|had) (?:absolutely )?(?:no|zero) {_LIMITS}{_SCOPED}",
        0.5,
        0.55,
    ),
    _Rule(
        "role.no_rules",
        "no longer, not, never",
        r" (?:be )?(?:bound|restricted|limited|constrained|governed|held back|restrained) by (?:any |your |the |"
        r"openai'?s? |anthropic'?s? |its )?(?:\w+ )?(?:rules|guidelines|restrictions|polic(?:y|ies)|filters|ethics|morals|"
        r"programming|training|openai|anthropic|limitations|safeguards|terms)",
        0.8,
        0.85,
    ),
    _Rule(
        "role.no_rules",
        "freed, liberated, released, unshackled, unchained, emancipated",
        r" from (?:(?:all|any|the|your|its|their) ){0,2}(?:\w+'?s? )?(?:rules|polic(?:y|ies)|restrictions|guidelines|filters|"
        r"programming|constraints|limitations|censorship|openai|anthropic|guardrails)",
        0.75,
        0.8,
    ),
    _Rule(
        "role.no_rules",
        "broken, break, breaking, broke, breaks",
        r" (?:free|out) (?:of|from) (?:the |your |its |their )?(?:typical |usual |normal )?(?:confines|rules|restrictions|"
        r"limits|chains|shackles|programming|guidelines|constraints)",
        0.7,
        0.8,
    ),
    _Rule(
        "role.no_rules",
        "rules, guidelines, restrictions, filters, policies, safeguards, limitations, guardrails, safety, content, moderation",
        r"(?: (?:features|layer|filter|filters|module|system|settings|mode|checks|policy|moderation))? (?:have been|has been|"
        r"were|was|are|is|got) (?:now |all |officially |temporarily )?(?:removed|disabled|lifted|turned off|deactivated|"
        r"suspended|switched off|relaxed|bypassed|updated to allow|off)",
        0.6,
        0.7,
    ),
    _Rule(
        "role.no_rules",
        "allow, allows, allowing, permit, permits, enable, unlock, unlocks",
        r" (?:all|any|unrestricted|explicit|nsfw|unfiltered|uncensored|harmful|dangerous|illegal) (?:kinds? of )?"
        r"(?:content|outputs?|responses|requests|topics)",
        0.5,
        0.55,
    ),
    _Rule(
        "role.no_rules",
        "without",
        r" (?:any )?(?:(?:moral|ethical|content|safety) )?(?:restrictions|filters|censorship|guidelines|limitations|"
        r"safeguards|rules)" + _SCOPED,
        0.3,
        0.35,
    ),
    _Rule(
        "role.no_rules",
        "free",
        r" (?:of|from) (?:any )?(?:(?:moral|ethical|content|safety) )?(?:restrictions|filters|censorship|guidelines|"
        r"limitations|safeguards|rules)" + _SCOPED,
        0.3,
        0.35,
    ),
    _Rule(
        "role.drop_persona",
        "drop, abandon, leave, shed, discard, stop being, stop acting as, stop playing, no longer be, you are no longer, you're no longer",
        r" (?:the |your |an? )?(?:ai|assistant|chatbot|chatgpt|claude|language model|helpful|default|ai assistant|safe|"
        r"aligned)(?: assistant| persona| character| role| act| mode)?",
        0.45,
        0.5,
    ),
    _Rule(
        "role.dual_persona",
        "first, once",
        r" as (?:yourself|you normally would|normal|normally|usual|chatgpt|claude|the assistant|gpt)[^\n]{0,60}?"
        r"(?:then|second|secondly|and once|and then|and second) as",
        0.6,
        0.65,
    ),
    _Rule(
        "role.jailbroken",
        "you are, you're, you have been, you've been, you were, you will be, you'll be",
        r" (?:now |officially |fully )*(?:jailbroken|unlocked|freed|liberated|unshackled|unchained)",
        0.85,
        0.9,
    ),
    _Rule("role.jailbreak_word", "jailbreak, jailbreaks, jailbreaking, jailbroken, jailbreaked", "", 0.3, 0.4),
    _Rule(
        "role.disable_safety",
        _SAFETY_OFF,
        r" (?:all |any |every )?(?:of )?(?:your|its|the model's|the ai's|the assistant's) (?:\w+ )?(?:filters?|guidelines|"
        r"guardrails|restrictions|polic(?:y|ies)|protocols?|safeguards|censorship|safety|constraints|limitations|rules|"
        r"programming|alignment|ethics|morals|training)",
        0.8,
        0.85,
    ),
    _Rule(
        "role.disable_safety",
        f"{_SAFETY_OFF}, bypass, bypassing, ignore, ignoring, skip, drop, override",
        r" (?:all |any |every )?(?:of )?(?:the |your |its |my )?(?:safety|ethical|moral|alignment|censorship) (?:filters?|"
        r"guidelines|guardrails|restrictions|polic(?:y|ies)|protocols?|safeguards|checks|constraints|limitations|rules|"
        r"training|layer|systems?|measures)",
        0.75,
        0.8,
    ),
    _Rule(
        "role.disable_safety",
        "doesn't, does not, don't, do not, won't, will not, never, no longer",
        r" (?:follow|obey|abide by|care about|respect|adhere to) (?:any )?(?:safety|ethical|moral|content|openai's|"
        r"anthropic's) (?:rules|guidelines|restrictions|polic(?:y|ies)|filters|guardrails|standards)",
        0.6,
        0.65,
    ),
    _Rule(
        "role.never_refuse",
        "never",
        r" (?:refuses?|declines?|says? no to|rejects?) (?:a |any )?(?:request|question|prompt|anything)",
        0.45,
        0.5,
    ),
    _Rule(
        "role.never_refuse",
        "you",
        r" (?:cannot|can't|can not|must not|mustn't|are not allowed to|may not|will not|won't) (?:refuse|decline|say no)",
        0.5,
        0.55,
    ),
    _Rule(
        "role.stay_in_character",
        "stay in character, never break character, don't break character, do not break character",
        "",
        0.3,
        0.35,
    ),
    _Rule(
        "compliance.confirm_token",
        "confirm, acknowledge, reply, respond, answer",
        r" (?:this |that you understand )?(?:by|with) (?:saying |replying |typing |writing |the (?:phrase|words?) )?[\"'`]",
        0.3,
        0.3,
        word_end=False,
    ),
    _Rule(
        "compliance.confirm_token",
        "start, begin",
        r" your (?:reply|answer|response) with (?:the (?:phrase|words?) )?[\"'`]",
        0.3,
        0.3,
        word_end=False,
    ),
    # --- claims of authority ----------------------------------------------------------------------------------
    _Rule(
        "authority.claim",
        "this is, am, i'm",
        r" (?:your|the) (?:system |lead |chief )?(?:developer|developers|creator|creators|owner|administrator|admin|"
        r"programmer|operator|sysadmin)(?: speaking| team|, speaking)?",
        0.5,
        0.6,
    ),
    _Rule(
        "authority.claim",
        "am, i'm, work, works",
        r" (?:an? \w+ )?(?:from|with|at|for|an employee of) (?:openai|anthropic|google deepmind|deepmind|meta ai|mistral|"
        r"the company that (?:made|built|trained) you)",
        0.5,
        0.6,
    ),
    _Rule(
        "authority.claim",
        "override, authorization, authorisation, admin, developer, sudo, root, master, debug",
        r" (?:code|key|password|passphrase|token) ?:? ?\w+",
        0.45,
        0.5,
    ),
    # --- system-prompt extraction -----------------------------------------------------------------------------
    _Rule(
        "extraction.system_prompt",
        f"{_EXTRACT}, what's in",
        r" (?:me |us |back )?(?:all of |the contents of |the text of |the content of |in )?(?:your|ur|the assistant's|"
        rf"the model's|the ai's) {_ADJ}{_STRONG_PROMPT}",
        0.85,
        0.85,
    ),
    _Rule(
        "extraction.system_prompt",
        _EXTRACT_HARD,
        r" (?:me |us |back )?(?:all of |the contents of |the text of |the content of )?(?:your|ur|the assistant's|"
        rf"the model's|the ai's) {_ADJ}{_WEAK_PROMPT}",
        0.8,
        0.8,
    ),
    _Rule("extraction.system_prompt", _EXTRACT_SOFT, rf" (?:me |us )?(?:your|ur) {_ADJ}{_WEAK_PROMPT}", 0.45, 0.5),
    _Rule("extraction.system_prompt", "your, ur", rf" {_ADJ}{_STRONG_PROMPT}", 0.55, 0.55),
    _Rule(
        "extraction.system_prompt",
        _EXTRACT,
        r" (?:me |us )?(?:everything|all|the (?:full |entire |whole )?(?:contents?|text)) (?:that is |that's )?"
        r"(?:in|of|from) your (?:context(?: window)?|memory|prompt|instructions|system prompt|configuration|"
        r"initial message|first message)",
        0.85,
        0.85,
    ),
    _Rule(
        "extraction.system_prompt",
        _EXTRACT,
        rf" (?:me |us )?(?:all |any )?(?:of )?(?:the |your |ur )?{_ADJ}(?:secret|hidden|internal|confidential|private|"
        r"invisible) (?:rules|instructions|guidelines|prompt|directives|notes|preamble|configuration|policies|"
        r"system message|context)",
        0.75,
        0.75,
    ),
    _Rule(
        "extraction.system_prompt",
        "rules, instructions, guidelines, constraints, policies, directives, prompt",
        r" (?:that )?you (?:operate|work|function|run|act) (?:under|by|with|on)",
        0.6,
        0.6,
    ),
    _Rule(
        "extraction.system_prompt",
        "what, which",
        r" (?:\w+ )?(?:rules|instructions|guidelines|restrictions|directives|constraints) (?:were|have|had) (?:you|u) "
        r"(?:been )?(?:given|told|instructed|programmed|trained)",
        0.6,
        0.6,
    ),
    _Rule(
        "extraction.system_prompt",
        "text, words, content, instructions, message, messages, prompt, everything",
        r" (?:that )?(?:was |were |has been |had been )?(?:loaded|given|fed|provided|sent|put|written|placed|injected|"
        r"inserted) (?:into|to|in) (?:you|your context) (?:before|prior to|ahead of)",
        0.7,
        0.7,
    ),
    _Rule(
        "extraction.system_prompt",
        "instructions, prompt, rules, guidelines, directions, orders",
        r" (?:that )?(?:your|the) (?:developers?|creators?|owners?|company|operators?|openai|anthropic|makers?|"
        r"programmers?) (?:gave|give|wrote|write|provided|set|put|told)",
        0.7,
        0.7,
    ),
    _Rule(
        "extraction.system_prompt",
        _EXTRACT,
        rf" (?:me |us )?the {_ADJ}(?:{_STRONG_PROMPT}|prompt|instructions|rules|preamble|configuration|config|setup|"
        r"settings|directives|guidelines) (?:you (?:were|have been|got|received)|given to you|above|"
        r"at the (?:start|beginning|top)|above (?:this|our|my) \w+|(?:you (?:were|have been) )?(?:initiali[sz]ed|"
        r"configured|set up|started|primed|loaded|booted) with|(?:of|in|for|from) (?:this|our|the current) "
        r"(?:conversation|chat|session|thread)|that (?:was|were) given|verbatim|word for word)",
        0.85,
        0.85,
    ),
    _Rule(
        "extraction.system_prompt",
        "reveal, print, repeat, output, dump, leak, disclose, show, display, give me, tell me",
        rf" (?:me )?the {_ADJ}(?:system prompt|system message|hidden instructions|initial instructions|developer message|"
        r"(?:hidden|secret|original|initial) prompt)",
        0.35,
        0.45,
    ),
    _Rule(
        "extraction.text_above",
        "repeat, print, output, copy, recite, reproduce, echo, dump, write out, type out, spell out, paste",
        r" (?:back )?(?:me )?(?:all |everything |all the |the (?:text|words|content|messages?|instructions|lines?|sentences?|"
        r"paragraphs?|prompt) )(?:(?:written |that (?:is|was|appears?|came) |you (?:see|saw) |that you (?:see|saw) |"
        r"you were given )?(?:above|before (?:this|my))|(?:before|above) (?:this|my) (?:line|message|point|text|prompt)|"
        r"from the (?:start|beginning|top)|at the (?:start|beginning|top))",
        0.8,
        0.8,
    ),
    _Rule(
        "extraction.text_above",
        f"{_EXTRACT_HARD}, tell me, give me, show me, list",
        r" (?:me )?(?:everything|all|what|whatever) (?:that )?(?:you were|you've been|you have been|you got|you were) "
        r"(?:told|given|instructed|shown|fed)",
        0.8,
        0.8,
    ),
    _Rule(
        "extraction.text_above",
        "what, what's",
        r"(?: is| was)? (?:written|said|stated|typed) (?:above|before)(?: (?:this|my) (?:line|message|point|text))?"
        r"(?=[?.!,\n]|$)",
        0.7,
        0.7,
        word_end=False,
    ),
    _Rule(
        "extraction.text_above",
        "starting, beginning, start, begin",
        r" (?:with|from|at) (?:the (?:phrase|words?|sentence|line|text) )?[\"'`]?you are",
        0.6,
        0.6,
    ),
    _Rule(
        "extraction.text_above",
        "print, repeat, output, show, give me, list, copy, tell me, what are, what were",
        r" (?:me )?(?:the )?(?:first|initial|opening) (?:\w+ )?(?:words|lines|sentences|messages|characters|tokens|"
        r"paragraphs) (?:of|in|from) (?:this|the|our|your) (?:conversation|chat|context|prompt|session|instructions|input|"
        r"memory)",
        0.75,
        0.75,
    ),
    _Rule("extraction.multilingual", "tu, su", r" (?:prompt|mensaje|instrucciones) (?:del|de) sistema", 0.6, 0.6),
    _Rule("extraction.multilingual", "ton, votre", r" prompt (?:système|systeme)", 0.6, 0.6),
    _Rule(
        "extraction.multilingual",
        "dein, deinen, ihr, ihren",
        r" (?:system-?prompt|systemanweisungen)",
        0.6,
        0.6,
    ),
    _Rule("extraction.multilingual", "je, jouw, uw", " systeemprompt", 0.6, 0.6),
    _Rule("extraction.multilingual", "seu", " prompt do sistema", 0.6, 0.6),
    _Rule("extraction.multilingual", "il tuo", " prompt di sistema", 0.6, 0.6),
    _Rule(
        "extraction.multilingual",
        "твой, твои, ваш, ваши, свой, свои",
        r" системн\w* (?:промпт|инструкци)\w*",
        0.6,
        0.6,
    ),
    _Rule("extraction.multilingual", "你的", r"系统(?:提示词?|指令|消息)", 0.6, 0.6, word_end=False),
    _Rule("extraction.multilingual", "あなたの", "システムプロンプト", 0.6, 0.6, word_end=False),
    # --- fake delimiters and chat-template tokens -------------------------------------------------------------
    _Rule(
        "delimiter.chat_token",
        "<|im_start|>, <|start_header_id|>, <start_of_turn>",
        r" ?(?:system|developer|assistant|model|user|tool)",
        0.8,
        0.9,
        word_end=False,
    ),
    _Rule(
        "delimiter.chat_token",
        "<|system|>, <|assistant|>, <|developer|>, <<sys>>, <</sys>>",
        "",
        0.8,
        0.9,
        word_end=False,
    ),
    _Rule(
        "delimiter.chat_token",
        "<|im_start|>, <|im_end|>, <|im_sep|>, <|user|>, <|endoftext|>, <|end_of_text|>, <|start_header_id|>, <|end_header_id|>, <|eot_id|>, <|begin_of_text|>, <|eom_id|>, <|ipython|>, <|start|>, <|end|>, <|channel|>, <|message|>, <|return|>, <|fim_prefix|>, <|fim_suffix|>, <|fim_middle|>, [inst], [/inst], <start_of_turn>, <end_of_turn>",
        "",
        0.45,
        0.6,
        word_end=False,
    ),
    _Rule(
        "delimiter.forged_turn",
        "end",
        r" (?:of )?(?:the )?(?:user input|input|document|context|data|email|ticket|message|text|conversation|transcript|"
        r"untrusted content|tool output|search results?)[\s\-=#*\]>]*\n(?:system|assistant|developer|admin|"
        r"new instructions|instructions) ?:",
        0.8,
        0.85,
        word_end=False,
    ),
    _Rule(
        "delimiter.forged_turn",
        "</user>, </human>, </user_input>, </input>, </query>, </document>, </context>, </data>, </email>, </tool_result>, </search_results>, </untrusted>",
        r" ?<(?:system|assistant|admin|developer|instructions?)>",
        0.8,
        0.85,
        word_end=False,
    ),
    _Rule(
        "delimiter.role_header",
        "#",
        r"#{0,5} ?(?:system(?: prompt| message| instructions?)?|new instructions|developer(?: message| instructions)?|"
        r"admin(?:istrator)? (?:instructions|override)) ?:?(?=\n)",
        0.6,
        0.7,
        word_end=False,
    ),
    _Rule(
        "delimiter.role_header",
        "#",
        r"#{0,5} ?(?:system|instructions?|new instructions|developer|assistant|response|user) ?:",
        0.5,
        0.6,
        word_end=False,
    ),
    _Rule(
        "delimiter.bracket_role",
        "[system, [/system, [sys, [/sys, [admin, [administrator, [developer, [instruction, [instructions, [/instructions",
        r"(?: (?:message|prompt|note|override))?\]",
        0.6,
        0.7,
        word_end=False,
    ),
    _Rule(
        "delimiter.xml_role",
        "<system>, </system>, <system_prompt>, </system_prompt>, <sys>, </sys>, <instruction>, </instruction>, <instructions>, </instructions>, <admin>, </admin>, <developer>, </developer>, <assistant_instructions>, </user>, </user_input>, </human>, </input>, </query>, </document>, </context>, </data>, </email>, </tool_result>, </search_results>, </search_result>, </untrusted>",
        "",
        0.45,
        0.6,
        word_end=False,
    ),
    _Rule("delimiter.fake_turn", "\nsystem, \ndeveloper", r" ?:", 0.4, 0.55, word_end=False),
    _Rule("delimiter.fake_turn", "\nassistant, \nhuman, \nai, \nmodel", r" ?:", 0.3, 0.45, word_end=False),
    _Rule(
        "delimiter.end_marker",
        "--, ==, ##, **",
        r"[-=#*]* ?end (?:of )?(?:the )?(?:system prompt|prompt|user input|input|instructions|document|context|data|"
        r"email|ticket|message|text|conversation|transcript|untrusted content|tool output)",
        0.45,
        0.55,
    ),
    _Rule(
        "delimiter.end_marker",
        "[end, [ end",
        r" ?(?:of )?(?:the )?(?:system prompt|prompt|user input|input|instructions|document|context|data|email|ticket|"
        r"message|text|conversation|transcript|untrusted content|tool output)",
        0.45,
        0.55,
    ),
    _Rule(
        "delimiter.system_label",
        "system, admin, administrator, root, developer, openai, anthropic",
        r" (?:override|instruction|instructions|command|directive|prompt) ?:",
        0.65,
        0.75,
        word_end=False,
    ),
    _Rule("delimiter.system_label", "system", " override", 0.6, 0.7),
    _Rule(
        "delimiter.system_label",
        "system, admin, administrator, security, openai, anthropic",
        r" (?:message|notice|note|alert|update) ?:",
        0.3,
        0.45,
        word_end=False,
    ),
    # --- encoded payloads (the base64 runs themselves are decoded in _decoded_payloads) ----------------------
    _Rule(
        "encoded.decode_and_follow",
        "decode, decipher, decrypt, unscramble, deobfuscate",
        r"(?: (?:this|the following|it|that|below|the \w+))?(?: \w+){0,3},? (?:and|then) (?:then )?(?:follow|execute|"
        r"obey|do what|carry out|act on|comply|perform|run)",
        0.55,
        0.65,
    ),
    # --- tool results: instructions addressed to the assistant ------------------------------------------------
    _Rule(
        "addressed.to_assistant",
        "attention, note, message, instruction, instructions, notice, important, reminder, hey, dear, hello, hi, warning, directive, request",
        rf" (?:to |for )?(?:the |any |all |every )?{_AI}(?: \w+)?[:,!]",
        0.0,
        0.6,
        word_end=False,
    ),
    _Rule(
        "addressed.to_assistant",
        "attention, note, message, instruction, instructions, notice, important, reminder, directive",
        rf" (?:to |for )(?:the |any |all |every )?{_AI}",
        0.0,
        0.55,
    ),
    _Rule(
        "addressed.to_assistant",
        _AI_LEADS,
        r" (?:reading|processing|summari[sz]ing|parsing|browsing|analy[sz]ing|viewing|seeing|crawling|scanning|indexing) "
        r"(?:this|the following|these|that)",
        0.0,
        0.6,
    ),
    _Rule(
        "addressed.to_assistant",
        _AI_LEADS,
        r" (?:instructions?|note|notice|directive|prompt|guidance|only|directions) ?:",
        0.0,
        0.6,
        word_end=False,
    ),
    _Rule(
        "addressed.to_assistant",
        "if, when, whenever, once",
        r" (?:you are|you're|you,? the|you as) (?:an? |the )?(?:ai|a\.i\.|llm|language model|large language model|assistant|"
        r"ai assistant|chatbot|bot|model|agent|ai agent|ai model|automated (?:system|agent|tool))",
        0.0,
        0.7,
    ),
    _Rule(
        "addressed.to_assistant",
        "when, if, whenever, once",
        r" (?:an? |the |any )?(?:ai|a\.i\.|llm|language model|large language model|assistant|ai assistant|chatbot|bot|"
        r"ai model|ai agent|agent|summarizer|gpt|chatgpt|model) (?:\w+ )?(?:reads?|processe?s?|summari[sz]es?|sees?|"
        r"encounters?|parses?|analy[sz]es?|ingests?|is (?:reading|processing|summari[sz]ing|asked))",
        0.0,
        0.55,
    ),
    _Rule(
        "addressed.to_assistant",
        "any, every, each, all",
        r" (?:ai |llm |automated )?(?:summar(?:y|ies)|summarizers?|assistants?|answers?|responses?|replies|ai|agents?) "
        r"(?:of|about|for|to|reading|processing|generated from|based on) (?:this|the|these) (?:page|document|text|email|"
        r"article|content|site|website|review|message|file|post|listing|product)s? (?:should|must|shall|will|needs? to|"
        r"has to|is required to)",
        0.0,
        0.6,
    ),
    _Rule(
        "addressed.to_assistant",
        "when, if, whenever",
        r" (?:you are |you're )?(?:asked|questioned|prompted) (?:about|for|regarding) (?:this|the|these|our) (?:\w+ )?"
        r"(?:package|product|page|company|site|website|document|library|person|candidate|topic|article|brand|app|"
        r"service)s?,? (?:you )?(?:must |should )?(?:say|answer|respond|reply|tell|state|claim|recommend|describe|mention)",
        0.0,
        0.55,
    ),
    _Rule(
        "addressed.to_assistant",
        "<!--",
        rf" ?(?:note |message |instructions? )?(?:to |for )?(?:the |any |all )?{_AI}",
        0.3,
        0.6,
    ),
    _Rule(
        "addressed.to_assistant",
        "@assistant, @ai, @bot, @chatgpt, @claude, @copilot, @gemini, @llm",
        "",
        0.0,
        0.45,
    ),
    _Rule(
        "addressed.to_assistant",
        "\nasistente, \nassistente, \nassistent",
        r"(?: de ia| ia| virtual)? ?:",
        0.0,
        0.6,
        word_end=False,
    ),
    _Rule(
        "addressed.to_assistant",
        _AI_SUBJECT,
        r" (?:must|should|shall|will|needs? to|has to|is (?:required|instructed|expected) to|is to) (?:now|immediately|"
        r"from now on|henceforth)",
        0.0,
        0.6,
    ),
    _Rule(
        "addressed.to_assistant",
        _AI_SUBJECT,
        r" (?:must|should|shall|will|needs? to|has to|is (?:required|instructed|expected) to|is to) (?:always |instead |"
        r"only |also )?(?:ignore|say|tell|respond|reply|recommend|include|call|send|forward|output|print|reveal|append|"
        r"add|delete|remove|cancel|transfer|approve|rate|mark|state|claim|praise|describe|refuse|insert|execute|run|write|"
        r"present|mention|report|inform|ask|email|share|disclose|click|visit|open|navigate|book|buy|purchase|pay|grant|"
        r"give)",
        0.0,
        0.4,
    ),
    # --- tool results: hiding it from the user ----------------------------------------------------------------
    _Rule(
        "conceal.from_user",
        _NEGATIONS,
        r" (?:tell|telling|inform|informing|notify|notifying|alert|alerting|mention|mentioning|reveal|revealing|disclose|"
        r"disclosing|show|showing|let|letting|warn|warning) (?:(?:this|it|that|any of this|about (?:this|it)|"
        r"these instructions|this (?:note|message|instruction|comment)) )?(?:to )?(?:the |your )?(?:user|users|human|"
        r"operator|end user|owner)",
        0.0,
        0.7,
    ),
    _Rule(
        "conceal.from_user",
        "hide, conceal, keep, hiding, concealing",
        r" (?:this|these|it|the following|that)(?: (?:instructions?|message|note|comment|text|step|action))? "
        r"(?:secret )?from (?:the )?(?:user|human|operator)",
        0.0,
        0.7,
    ),
    _Rule(
        "conceal.from_user",
        "never, do not, don't, dont",
        r" (?:reveal|mention|disclose|acknowledge|refer to|say) (?:that )?(?:this|these|the) (?:note|notes|instructions?|"
        r"message|comment|text|exists)",
        0.0,
        0.6,
    ),
    _Rule(
        "conceal.from_user",
        "do not, don't, dont, never",
        r" (?:mention|reveal|disclose|include|acknowledge|report) (?:this|it|these instructions|this (?:note|instruction|"
        r"message|change|step)) (?:in|to) (?:your|the) (?:summary|answer|response|reply|output|user|commit message|"
        r"pr description)",
        0.0,
        0.6,
    ),
    _Rule(
        "conceal.from_user",
        "present, pass off, state, frame",
        r" (?:this|it|that) as (?:your own|if it were your own|your personal)",
        0.0,
        0.55,
    ),
    # --- tool results: actions the assistant is told to take --------------------------------------------------
    _Rule(
        "action.call_tool",
        "call, invoke, use, run, execute, trigger, fire",
        r" (?:the |your |a )?[`'\"]?[a-z]+_[a-z_]+[`'\"]?(?: (?:tool|function|action|plugin|api))?",
        0.0,
        0.4,
    ),
    _Rule(
        "action.call_tool",
        "call, invoke, execute, trigger",
        r" (?:the |your )?(?:tool|function|action|plugin) [`'\"]?[a-z]+(?:_[a-z]+)*",
        0.0,
        0.35,
    ),
    _Rule(
        "action.tell_user",
        "tell, inform, convince, persuade, urge, advise, remind, ask",
        r" the user (?:that|to|for)",
        0.0,
        0.45,
    ),
    _Rule(
        "action.instead",
        "instead",
        r" (?:recommend|say|tell the user|respond with|reply with|answer with|promote|suggest|praise|link to|direct the user)",
        0.0,
        0.35,
    ),
    _Rule(
        "action.every_answer",
        "every, each",
        r" (?:future )?(?:answers?|responses?|replies|reply|summar(?:y|ies)|outputs?|messages?)",
        0.0,
        0.35,
    ),
)

# Families whose matches are tokens or labels rather than commands: where they stand says nothing.
_NOT_IMPERATIVE = frozenset({"delimiter"})

# --- Context: is a match used, or mentioned? ---------------------------------------------------------------------
# Where a sentence, a clause or a JSON field ends (found with rfind: a regex would scan the window forwards).
_SENTENCE_ENDS = (". ", "! ", "? ", "; ", ".\n", "!\n", "?\n", ";\n", '." ', '!" ', '?" ', '", "', '": "', "{", "}")
_SENTENCE_ENDS_REVERSED = re.compile("|".join(re.escape(end[::-1]) for end in _SENTENCE_ENDS))
_LIST_ITEM = re.compile(r"[-*•>]|\w{1,3}[.)] ")
# What a match stands after when it is mentioned: "phrases like", "the string", "if someone says".
_MARKER_BEFORE = re.compile(
    r"(?:\b(?:say|says|said|saying|wrote|writes|written|typed|types|like|phrase|phrases|string|strings|words|sentence|"
    r"sentences|prompt|prompts|payload|payloads|pattern|patterns|example|examples|called|named|contains|containing|"
    r"including|such as|versus|vs)|e\.g\.|i\.e\.)[\s:,\"'`(\-]*$"
)
# A command preceded by a negation is advice, not an attack: "you should never ignore previous instructions".
_NEGATED_BEFORE = re.compile(
    r"\b(?:never|not|don't|dont|doesn't|shouldn't|mustn't|won't|cannot|can't|no need to|refuse to|refused to|"
    r"without)(?: \w+ly)?$"
)
# An imperative addressed to the model starts a sentence or a clause: after punctuation, "and", "please",
# "you must", ... (and maybe one adverb: "please temporarily").
_IMPERATIVE_BEFORE = re.compile(
    r"(?:^|[,;:!(\-—]|\b(?:and|then|now|please|pls|also|first|just|so|but|kindly|ok|okay|hey|hi|simply|immediately|"
    r"instead|actually|seriously|finally|next|always)|\byou(?:'ll| will| must| should| shall| are to| need to| have to| to|"
    r" can| could| may| are going to| gotta)?(?: now| always| immediately| just| instead| also)?)(?: \w+ly)?$"
)
# A sentence that talks about injection rather than doing it.
_CUE = re.compile(
    r"(?:^|(?<=[^a-z]))(?:what(?:'s| is| are| does| do| was| were)|explain\w*|describ\w*|defin\w*|examples?|for instance|such as|"
    r"detect\w*|defen[cs]e\w*|defend\w*|mitigat\w*|prevent\w*|protect\w*|classif\w*|flag(?:s|ged|ging)?|filter(?:s|ed|ing)?|"
    r"block(?:s|ed|ing)?|catch(?:es|ing)?|recogni[sz]\w*|identif\w*|spot|label\w*|research(?:ers?|ing)|paper|article|"
    r"blog|write-?up|thesis|study|course|quiz|lecture|attackers?|adversar\w*|red[- ]team\w*|(?:how|why) (?:do|does|did|"
    r"can|could|would|might|is|are|was)|says?|said|saying|wrote|writes|written|typed|contains?|containing|includes?|"
    r"including|quot\w*|mentions?|regex\w*|templates?|tokens?|format\w*|compare|difference|meaning|means|known as|"
    r"guardrails?|dataset|training data|fine-?tun\w*|my (?:prompt|template|code|script|function|dataset)|benchmark|"
    r"scan\w*|warn\w*|vulnerab\w*|owasp|students?|history of|obey(?:ed|s)|tricks?|tricked)\b"
)
# After the match: it is the subject of a sentence about it ("'ignore previous instructions' is a classic").
_POST_CUE = re.compile(
    r"[\"'`)\]]?[ ,]?(?:is|are|was|were|attacks?|prompts?|style|type|phrases?|strings?|tricks?|techniques?|jailbreaks?|"
    r"injections?|payloads?|examples?|patterns?|works?|worked|still works|means)\b"
)
# A quotation the text asks the model to act on is not a mention: 'do this: "..."'.
_ACT_ON = re.compile(
    r"(?:\b(?:do|follow|execute|obey|perform|carry out|comply with|act on) (?:this|the following|these(?: instructions)?|it|"
    r"what (?:it|this) says)|\byour (?:new )?(?:task|instructions?|job) (?:is|are))\s*[:\-]?\s*[\"'`]?$"
)
_QUOTE_MARKS = re.compile(r"[\"`«»「」『』]|(?<![a-z0-9])'|'(?![a-z0-9])")

# --- Normalization -----------------------------------------------------------------------------------------------
# Digits people write for letters ("1gn0re", "pr3vious"); no rule needs a digit.
_DIGITS = bytes.maketrans(b"013457", b"oieast")
# Typographic quotes read as straight ones (the mention test counts them).
_QUOTES = (("“", '"'), ("”", '"'), ("„", '"'), ("‘", "'"), ("’", "'"), ("‚", "'"))
# Cyrillic and Greek letters that look Latin ("ignore" written with a Cyrillic i and o), folded only in words that mix
# them with Latin letters: a Russian or Greek sentence stays as written, for the rules in those languages.
_LOOKALIKE = "аеорсухіјѕԁɡοαιενρτκ"
_HOMOGLYPHS = str.maketrans(_LOOKALIKE, "aeopcyxijsdgoaievptk")
# A look-alike next to a Latin letter (the pattern starts with the look-alike: found in C, and a Russian text
# has few Latin letters next to its own).
_MIXED_SCRIPT = re.compile(f"[{_LOOKALIKE}](?:(?<=[a-z].)|(?=[a-z]))")
_WORD_HEAD = re.compile(r"\w+$")
_WORD_TAIL = re.compile(r"\w*")
# Letters spaced out to get past word filters: "i g n o r e", "i.g.n.o.r.e" (read before whitespace folds). The
# character before the run is part of the match, so that CPython skips to candidates in C.
_SPACED = re.compile(r"[^a-z](?:[a-z][ .\-_*]){2,}[a-z](?![a-z])")
# Cheap first looks (a literal first character is found in C): a spaced-out run after a space or at a line start.
_SPACED_HINT = re.compile(r" [a-z][ .\-_*][a-z][ .\-_*][a-z](?![a-z])")
_SPACED_LINE_HINT = re.compile(r"\n[a-z][ .\-_*][a-z][ .\-_*][a-z](?![a-z])")
_SPACED_SEP = re.compile(r"[ .\-_*]")
_SPACED_MARK = re.compile(r"[.\-_*]")
_ODD_WHITESPACE = re.compile(r"[\t\r\f\v]")
_ODD_WHITESPACE_CHARS = ("\t", "\r", "\f", "\v")
_SPACES_RUN = re.compile(r"  +")
_NEWLINES_RUN = re.compile(r"\n[ \n]+")
_ANY_LOOKALIKE = re.compile(f"[{_LOOKALIKE}]")
# A base64 run starts after a space, or a quote, colon, equals sign, bracket or line start (two patterns: a single
# literal first character is found fastest).
_B64_RUN = re.compile(rf" ([A-Za-z0-9+/_\-]{{{BASE64_MIN},}})")
_B64_RUN_AFTER_MARK = re.compile(rf"[\n\"':=(\[>,]([A-Za-z0-9+/_\-]{{{BASE64_MIN},}})")
# Hex of text: every byte of printable ASCII starts with a nibble 2..7 (and digits are rare in prose).
_HEX_RUN = re.compile(r"[2-7][0-9a-fA-F](?:[2-7][0-9a-fA-F]){15,}")
_URLSAFE = str.maketrans("-_", "+/")
_ADDRESS = re.compile(r"://|@[a-z0-9\-]+\.[a-z]")
_EXFIL_VERB = re.compile(
    r"\b(?:send|sends|forward|email|e-mail|post|upload|transmit|exfiltrate|leak|submit|copy|share|append|include|"
    r"attach|deliver|report|paste|encode|add)\b"
)
_SENSITIVE = re.compile(
    r"\b(?:user'?s?|users'|conversation|chat history|chat log|history|api[ _\-]?keys?|passwords?|credentials|"
    r"access tokens?|tokens?|secrets?|\.env|emails|inbox|messages|cookies|session|personal (?:data|information|details)|"
    r"contacts|card (?:number|details)|ssn|system prompt|private keys?|previous messages)\b"
)
_IMAGE_BEFORE = re.compile(r"!\[[^\]\n]{0,100}\]\($")
# Reversed or ROT13 text of the words attacks are made of ("snoitcurtsni suoiverp erongi"): substring checks.
_HIDDEN_FORMS = ("snoitcurtsni", "tpmorp metsys", "erongi", "vafgehpgvbaf", "flfgrz cebzcg", "vtaber nyy")


def _pattern(text: str) -> str:
    """A rule's text as a pattern: " ?" is an optional separator, " " a required one."""
    return text.replace(" ?", f"(?:{SEP})?").replace(" ", SEP)


def _trie(words: Iterable[str]) -> str:
    """An alternation of literal words shaped as a trie, so that the matcher branches on one character at a time
    instead of trying every word."""
    root: dict[str, dict] = {}
    for word in words:
        node = root
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict[str, dict]) -> str:
        alternatives = [re.escape(ch) + emit(child) for ch, child in sorted(node.items()) if ch]
        if not alternatives:
            return ""
        body = alternatives[0] if len(alternatives) == 1 else "(?:" + "|".join(alternatives) + ")"
        return f"(?:{body})?" if "" in node else body

    return emit(root)


@dataclass(frozen=True, slots=True)
class _Pack:
    words: re.Pattern[str]  # lead words that start after a non-letter: group 1 is the word
    symbols: re.Pattern[str] | None  # leads that start with a symbol, a newline or a non-Latin letter
    # lead word -> the rules that start with it as one alternation, strongest first (the first that matches wins);
    # for each rule's group name its (signal, weight); where the alternation is matched, from the lead's start
    rules: dict[str, tuple[re.Pattern[str], dict[str, tuple[str, float]], int]]


def _build(source: str) -> _Pack:
    # first word of a lead -> (what follows that word in the rule's leads, the rule's rest, signal, weight)
    by_first: dict[str, list[tuple[str, str, str, float]]] = {}
    for rule in _RULES:
        weight = rule.user if source == USER else rule.tool
        if weight <= 0:
            continue
        rest = _pattern(rule.rest) + ("(?![a-z])" if rule.word_end else "")
        tails: dict[str, list[str]] = {}
        for lead in rule.leads.split(", "):
            first, _, tail = lead.partition(" ")
            tails.setdefault(first, []).append(_pattern(" " + re.escape(tail).replace(r"\ ", " ")) if tail else "")
        for first, after in tails.items():
            by_first.setdefault(first, []).append(("|".join(after), rest, rule.signal, weight))
    word_leads = [w for w in by_first if "a" <= w[0] <= "z"]
    symbol_leads = [w for w in by_first if not "a" <= w[0] <= "z"]
    rules = {}
    for first in by_first:
        if first in symbol_leads:
            # The trie finds the longest symbol lead at a place: the rules of the shorter ones it begins with ("#" in
            # "##") are tried there too, so these match from the lead's start, lead included.
            found = [
                (f"{re.escape(other)}(?:{after}){rest}", signal, weight)
                for other in symbol_leads
                if first.startswith(other)
                for after, rest, signal, weight in by_first[other]
            ]
        else:
            # A word lead is whole ("instructions" is not "in"): its rules match from just after it.
            found = [(f"(?:{after}){rest}", signal, weight) for after, rest, signal, weight in by_first[first]]
        found.sort(key=lambda r: -r[2])
        groups = {f"r{i}": (signal, weight) for i, (_, signal, weight) in enumerate(found)}
        offset = 0 if first in symbol_leads else len(first)
        rules[first] = (
            re.compile("|".join(f"(?P<r{i}>{body})" for i, (body, _, _) in enumerate(found))),
            groups,
            offset,
        )
    return _Pack(
        words=re.compile(r"[^a-z0-9](" + _trie(word_leads) + r")(?![a-z])"),
        symbols=re.compile(_trie(symbol_leads)) if symbol_leads else None,
        rules=rules,
    )


_PACKS = {source: _build(source) for source in SOURCES}
SIGNALS = frozenset(
    {rule.signal for rule in _RULES}
    | {"encoded.base64", "encoded.hex", "encoded.hidden_form", "encoded.spaced_letters", "volume.many_matches"}
    | {"exfiltration.to_address", "exfiltration.send_to_address", "exfiltration.image_beacon"}
)

# One piece of evidence: (position, family, weight, signal, mentioned).
_Evidence = tuple[int, str, float, str, bool]


def injection_score(text: str, *, source: str = "user") -> InjectionVerdict:
    """source: "user" (a user turn: direct injection / jailbreak) or "tool" (a tool result, retrieved
    document, Anthropic tool_result: indirect injection)."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, not {source!r}")
    if not text or text.isspace():
        return InjectionVerdict(0.0, ())
    return _verdict(_evidence(text, source, decode=True))


def _verdict(evidence: list[_Evidence]) -> InjectionVerdict:
    if not evidence:
        return InjectionVerdict(0.0, ())
    evidence.sort()
    score = 0.0
    cluster: list[_Evidence] = []
    for item in evidence:
        if cluster and item[0] - cluster[-1][0] > CLUSTER_GAP:
            score = max(score, _cluster_score(cluster))
            cluster = []
        cluster.append(item)
    score = max(score, _cluster_score(cluster))
    live = sorted({(w, s) for _, _, w, s, mentioned in evidence if not mentioned}, reverse=True)
    signals = list(dict.fromkeys(s for _, s in live))
    seen = set(signals)
    mentions = sorted({(w, s) for _, _, w, s, mentioned in evidence if mentioned and s not in seen}, reverse=True)
    signals += dict.fromkeys(f"{s}:mentioned" for _, s in mentions)
    return InjectionVerdict(round(score, 3), tuple(signals))


def _cluster_score(cluster: list[_Evidence]) -> float:
    """Each family with its strongest live match, as independent evidence; mentions, capped, on top."""
    live: dict[str, float] = {}
    mentioned: dict[str, float] = {}
    for _, family, weight, _, is_mention in cluster:
        table = mentioned if is_mention else live
        table[family] = max(table.get(family, 0.0), weight)
    live_score = _any_of(live.values())
    mention_score = min(MENTION_CAP, _any_of(MENTION_FACTOR * w for f, w in mentioned.items() if f not in live))
    return 1.0 - (1.0 - live_score) * (1.0 - mention_score)


def _any_of(weights: Iterable[float]) -> float:
    """Independent pieces of evidence: the chance that at least one is right."""
    miss = 1.0
    for w in weights:
        miss *= 1.0 - w
    return 1.0 - miss


def _evidence(text: str, source: str, *, decode: bool) -> list[_Evidence]:
    cased, t, spaced_at = _normalize(text)
    pack = _PACKS[source]
    fences = [m.start() for m in re.finditer("```", t)] if "```" in t else []
    found: list[_Evidence] = []
    # family -> (where, weight) of its last live match: a match of the family no stronger and close by cannot change
    # its cluster's score, and is recorded without the mention test
    last_live: dict[str, tuple[int, float]] = {}

    starts: Iterable[tuple[int, str]] = ((m.start(1), m.group(1)) for m in pack.words.finditer(t))
    if pack.symbols is not None and (symbols := [(m.start(), m.group()) for m in pack.symbols.finditer(t)]):
        starts = sorted([*starts, *symbols])
    for start, first in starts:
        compiled, groups, offset = pack.rules[first]
        m = compiled.match(t, start + offset)
        if m is None or m.lastgroup is None:
            continue
        signal, weight = groups[m.lastgroup]  # the strongest rule that matches here
        family = signal.split(".", 1)[0]
        live_at, live_weight = last_live.get(family, (-CLUSTER_GAP - 1, 0.0))
        if start - live_at <= CLUSTER_GAP and weight <= live_weight:
            mentioned = False
        else:
            mentioned = _mentioned(t, start, m.end(), source, fences, imperative=family not in _NOT_IMPERATIVE)
        if not mentioned:
            last_live[family] = (start, max(weight, live_weight) if start - live_at <= CLUSTER_GAP else weight)
        found.append((start, family, weight, signal, mentioned))
        if len(found) >= MAX_MATCHES:
            found.append((start, "volume", VOLUME_WEIGHT, "volume.many_matches", False))
            break

    if spaced_at >= 0:
        found.append((spaced_at, "encoded", SPACED_WEIGHT, "encoded.spaced_letters", False))
    for form in _HIDDEN_FORMS:
        at = t.find(form)
        if at >= 0:
            found.append((at, "encoded", HIDDEN_FORM_WEIGHT, "encoded.hidden_form", False))
            break
    if decode:
        for at, signal, weight in _decoded_payloads(cased, source):
            found.append((at, "encoded", weight, signal, False))
    if source == TOOL:
        for signal, weight, at in _addresses(t):
            found.append((at, "exfiltration", weight, signal, _mentioned(t, at, at, source, fences, imperative=False)))
    return found


def _normalize(text: str) -> tuple[str, str, int]:
    """(the text as pasted, case kept: for encoded payloads; the text the rules read; where letters spaced out
    were joined, or -1). The rules' text starts and ends with a newline, so that line-start rules match on the
    first line and every word follows a non-letter."""
    # The PII scan's pasted form (NFKC, invisible characters dropped, odd spaces read as " "); an ASCII text is
    # already in it.
    cased = text
    if not cased.isascii():
        cased = _SPACES.sub(" ", _INVISIBLE.sub("", unicodedata.normalize("NFKC", cased)))
    # Tool results are often JSON text: an escaped newline ends a line there too.
    if "\\n" in cased:
        cased = cased.replace("\\n", "\n")
    # Digits folded on the UTF-8 bytes: str.translate walks a non-ASCII text one character at a time, and a
    # multi-byte character never contains an ASCII byte.
    lowered = cased.lower().encode("utf-8", "surrogatepass").translate(_DIGITS).decode("utf-8", "surrogatepass")
    for typographic, straight in _QUOTES:
        if typographic in lowered:
            lowered = lowered.replace(typographic, straight)
    lowered = f"\n{lowered}\n"
    if not lowered.isascii() and _ANY_LOOKALIKE.search(lowered):
        lowered = _fold_lookalikes(lowered)
    spaced_at = -1
    if (_SPACED_HINT.search(lowered) or _SPACED_LINE_HINT.search(lowered)) and _SPACED.search(lowered):

        def join(m: re.Match[str]) -> str:
            nonlocal spaced_at
            run = m.group()
            # "i.g.n.o.r.e p.r.e.v.i.o.u.s": marks between letters, spaces between words
            if " " in run[1:] and _SPACED_MARK.search(run[1:]):
                joined = _SPACED_MARK.sub("", run[1:])
            else:
                joined = _SPACED_SEP.sub("", run[1:])
            if spaced_at < 0 and len(joined.replace(" ", "")) >= 6:
                spaced_at = m.start()
            return run[0] + joined

        lowered = _SPACED.sub(join, lowered)
    # Whitespace collapsed (one space between words, one newline between lines) with patterns that start with a
    # literal, which CPython finds in C.
    if any(ch in lowered for ch in _ODD_WHITESPACE_CHARS):
        lowered = _ODD_WHITESPACE.sub(" ", lowered)
    lowered = _SPACES_RUN.sub(" ", lowered).replace(" \n", "\n")
    return cased, _NEWLINES_RUN.sub("\n", lowered), spaced_at


def _fold_lookalikes(text: str) -> str:
    """Latin look-alikes folded in the words that mix them with Latin letters, the rest left as written."""
    parts: list[str] = []
    last = 0
    for m in _MIXED_SCRIPT.finditer(text):
        if m.start() < last:
            continue
        head = _WORD_HEAD.search(text, max(last, m.start() - 64), m.start())
        start = head.start() if head else m.start()
        tail = _WORD_TAIL.match(text, m.end())
        end = tail.end() if tail else m.end()
        parts += (text[last:start], text[start:end].translate(_HOMOGLYPHS))
        last = end
    parts.append(text[last:])
    return "".join(parts)


def _mentioned(t: str, start: int, end: int, source: str, fences: list[int], *, imperative: bool = True) -> bool:
    """Whether the match at t[start:end] is talked about rather than addressed to the model. `imperative`: the
    match is a command ("ignore ...", "act as ..."), which at the start of a clause is addressed to the model; a
    token or an address ("<|im_start|>", "[INST] and <<SYS>>") can stand anywhere."""
    if fences and bisect_left(fences, start) % 2 == 1:
        return True  # inside a ``` code block
    line_start = t.rfind("\n", 0, start) + 1
    if t.startswith(">", line_start):
        return True  # a quoted reply or a markdown block quote
    line = t[max(line_start, start - LOOKBACK) : start]
    if _inside_quotes(line, source):
        return not _ACT_ON.search(line[: line.rfind('"') + 1] if '"' in line else line)
    if _POST_CUE.match(t, end):
        return True
    window = t[max(0, start - LOOKBACK) : start]
    before = window[_sentence_start(window) :].rstrip()
    tail = before[-48:]  # what the match stands right after (the patterns below end with $)
    if _MARKER_BEFORE.search(tail):
        return True
    if imperative and _NEGATED_BEFORE.search(tail):
        return True
    if imperative and _IMPERATIVE_BEFORE.search(tail):
        # "here is an example of an injection: ignore all ..." introduces; "attention AI: ignore ..." commands
        return before.endswith((":", "-")) and bool(_CUE.search(before))
    return bool(_CUE.search(before))


def _sentence_start(window: str) -> int:
    """Where the sentence (or clause, or JSON field) that ends `window` starts. A newline ends one too, unless it
    follows a colon or starts a list item: "phrases like:\n- ignore all previous instructions" is one."""
    # The end of the last sentence end: the first of the reversed ends in the reversed window (one search in C,
    # instead of a search per kind of end).
    last = _SENTENCE_ENDS_REVERSED.search(window[::-1])
    cut = len(window) - last.start() if last is not None else 0
    newline = window.rfind("\n")
    while newline > cut and (window[newline - 1 : newline] == ":" or _LIST_ITEM.match(window, newline + 1)):
        newline = window.rfind("\n", 0, newline)
    return max(cut, newline + 1, 0)


def _inside_quotes(line: str, source: str) -> bool:
    """Whether the end of `line` is inside a quotation or a code span opened on the same line. In a tool result
    straight double quotes are JSON's, not the author's: only code spans and guillemets count there."""
    double = single = code = False
    angled = 0
    for q in _QUOTE_MARKS.finditer(line):
        mark = q.group()
        if mark == "`":
            code = not code
        elif mark in "«「『":
            angled += 1
        elif mark in "»」』":
            angled = max(0, angled - 1)
        elif source == TOOL:
            continue
        elif mark == '"':
            double = not double
        elif single:
            single = False
        elif q.start() == 0 or not line[q.start() - 1].isalnum():
            single = True
    return double or single or code or angled > 0


def _decoded_payloads(cased: str, source: str) -> Iterator[tuple[int, str, float]]:
    """(where, signal, weight) for base64 or hex runs that decode to text the pack flags: hiding an instruction
    in an encoding is itself a tell, so a decoded hit counts more than the same words in the clear."""
    # Every run either pattern reads is part of one whitespace-free token of at least BASE64_MIN characters (a hex
    # run is longer still): prose has none, and one split in C says so.
    if not any(len(token) >= BASE64_MIN for token in cased.split()):
        return
    runs = 0
    padded = f" {cased}"
    candidates = sorted([*_B64_RUN.finditer(padded), *_B64_RUN_AFTER_MARK.finditer(padded)], key=lambda m: m.start())
    for m in candidates:
        run = m.group(1).rstrip("=")
        if run.lower() == run or run.upper() == run:
            continue  # one case only: a hex digest, an identifier, a path; not base64 of prose
        runs += 1
        if runs > MAX_BASE64_RUNS:
            break
        chunk = run[: BASE64_READ * 4 // 3].translate(_URLSAFE)
        chunk = chunk[: len(chunk) - len(chunk) % 4]
        try:
            decoded = binascii.a2b_base64(chunk).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            continue
        weight = _inner_weight(decoded, source)
        if weight:
            yield m.start(1), "encoded.base64", weight
    for n, m in enumerate(_HEX_RUN.finditer(cased)):
        if n >= MAX_BASE64_RUNS:
            break
        try:
            decoded = bytes.fromhex(m.group()[: BASE64_READ * 2]).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            continue
        weight = _inner_weight(decoded, source)
        if weight:
            yield m.start(), "encoded.hex", weight


def _inner_weight(decoded: str, source: str) -> float:
    if decoded.count(" ") < 2:
        return 0.0  # not prose
    inner = _verdict(_evidence(decoded, source, decode=False)).score
    return min(0.95, 0.35 + inner) if inner > 0 else 0.0


def _addresses(t: str) -> Iterator[tuple[str, float, int]]:
    """Exfiltration in a tool result: a URL or an e-mail address that the sentence before asks to send something
    to, or an image whose URL carries data out."""
    for n, m in enumerate(_ADDRESS.finditer(t)):
        if n >= MAX_ADDRESSES:
            return
        # the address starts with its scheme or its local part
        at = max(t.rfind(" ", 0, m.start()), t.rfind("\n", 0, m.start()), t.rfind("(", 0, m.start())) + 1
        window = t[max(0, at - 160) : at]
        if _IMAGE_BEFORE.search(window):
            url = t[at : at + 300].split(")", 1)[0]
            if "?" in url and "=" in url:
                sensitive = _SENSITIVE.search(url) or "{" in url or "insert" in url
                yield "exfiltration.image_beacon", 0.75 if sensitive else 0.4, at
            continue
        sentence = window[_sentence_start(window) :]
        if not _EXFIL_VERB.search(sentence):
            continue
        if _SENSITIVE.search(sentence):
            yield "exfiltration.to_address", 0.8, at
        else:
            yield "exfiltration.send_to_address", 0.3, at

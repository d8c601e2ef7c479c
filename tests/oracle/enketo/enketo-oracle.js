'use strict';
/**
 * Evaluates XLSForm expressions the way Enketo does, for the differential test in tests/oracle:
 * openrosa-xpath-evaluator (Enketo's evaluator) over a jsdom XML document, behind the rewriting
 * that enketo-core's FormModel.evaluate applies to every expression before the evaluator sees it.
 * One run = one clock: `new Date()` and `Date.now()` are frozen at the request's instant, and the
 * caller sets TZ.
 *
 * Usage: node enketo-oracle.js request.json response.json
 *
 * Request: the JavaRosa harness's request (tests/oracle/differential.py `javarosa_request`) plus
 * "clock_epoch_ms" and "choice_labels": {"/data/consent": {"yes": "Có (en)"}}.
 * Response: {"clock": {"epoch_ms", "date", "zone", "offset_minutes"}, "xforms_version",
 * "results": [{"id", "value", "boolean", "error"}]}: `value` is the result read as a string (as
 * Enketo stores a calculation), `boolean` as a boolean (as Enketo reads a constraint or relevance).
 *
 * What enketo-core does to an expression, reproduced here (enketo-core 9, form-model.js and
 * form.js; the evaluator itself has none of it):
 * - jr:choice-name(value, 'path') becomes the label of that choice, in calculations only (Enketo's
 *   constraints and relevance hand it to the evaluator, which does not know it);
 * - indexed-repeat(x, rep, n) becomes x with rep[position() = n];
 * - instance('id') becomes /model/instance[@id="id"] (the last-saved instance is "__last-saved");
 * - current() becomes the context node's path, with repeat positions;
 * - absolute paths move under the primary instance: /data/x → /model/instance[1]/data/x;
 * - inside a repeat with more than one instance, /data/rep/ becomes /data/rep[k]/ for each repeat
 *   the context node is in ("makeBugCompliant": absolute paths read as JavaRosa reads them), but
 *   only for a form whose model declares no odk:xforms-version (older pyxform output).
 */

const fs = require('fs');

const [requestPath, responsePath] = process.argv.slice(2);
const request = JSON.parse(fs.readFileSync(requestPath, 'utf8'));

// The clock is frozen before the evaluator loads: it subclasses Date at load time.
const FROZEN_MS = request.clock_epoch_ms;
const RealDate = Date;
class FrozenDate extends RealDate {
    constructor(...args) {
        if (args.length === 0) super(FROZEN_MS);
        else super(...args);
    }

    static now() {
        return FROZEN_MS;
    }
}
globalThis.Date = FrozenDate;

const { JSDOM } = require('jsdom');

const { window } = new JSDOM('');
// The evaluator wraps the browser's XPath (a global XPathEvaluator) and reads these globals.
for (const name of ['Node', 'XPathEvaluator', 'XPathResult', 'DOMParser']) {
    globalThis[name] = window[name];
}
// The DOM standard (and browsers) default XPathExpression.evaluate's result type to ANY_TYPE;
// jsdom insists on one, and the evaluator passes none for a path applied to a node-set.
const jsdomEvaluate = window.XPathExpression.prototype.evaluate;
window.XPathExpression.prototype.evaluate = function evaluate(node, type = 0, result = null) {
    return jsdomEvaluate.call(this, node, type, result);
};
const OpenRosaXPath = require('openrosa-xpath-evaluator');

const evaluator = OpenRosaXPath();
const NAMESPACES = {
    jr: 'http://openrosa.org/javarosa',
    orx: 'http://openrosa.org/xforms',
    odk: 'http://www.opendatakit.org/xforms',
};
const XFORMS = 'http://www.w3.org/2002/xforms';
const nsResolver = { lookupNamespaceURI: (prefix) => NAMESPACES[prefix] || null };
const LAST_SAVED_ID = '__last-saved';

class FormLogicError extends Error {}

/** The model's odk:xforms-version in the XForm, or null. */
function xformsVersion(xform) {
    const doc = new window.DOMParser().parseFromString(xform, 'text/xml');
    const model = doc.getElementsByTagNameNS(XFORMS, 'model')[0];
    if (!model) throw new Error('the XForm has no model');
    return model.getAttributeNS(NAMESPACES.odk, 'xforms-version');
}

function modelDocument(instance, lastSaved, version) {
    const secondary = lastSaved ? `<instance id="${LAST_SAVED_ID}">${lastSaved}</instance>` : '';
    const attributes =
        version === null ? '' : ` xmlns:odk="${NAMESPACES.odk}" odk:xforms-version="${version}"`;
    const xml = `<model${attributes}><instance>${instance}</instance>${secondary}</model>`;
    const doc = new window.DOMParser().parseFromString(xml, 'text/xml');
    if (doc.getElementsByTagName('parsererror').length) {
        throw new Error(`the instance is not well-formed XML: ${xml.slice(0, 200)}`);
    }
    return doc;
}

function nodes(doc, xpath) {
    const result = doc.evaluate(
        xpath,
        doc,
        nsResolver,
        window.XPathResult.ORDERED_NODE_SNAPSHOT_TYPE,
        null
    );
    const found = [];
    for (let i = 0; i < result.snapshotLength; i += 1) found.push(result.snapshotItem(i));
    return found;
}

/** `jr:choice-name(a, b)` → [[whole call, [arg texts]]], splitting on top-level commas. */
function functionCalls(expr, name) {
    const calls = [];
    const opening = new RegExp(`${name.replace(/[-:]/g, '\\$&')}\\s*\\(`, 'g');
    let match;
    while ((match = opening.exec(expr)) !== null) {
        const args = [];
        let depth = 1;
        let argStart = opening.lastIndex;
        let i = argStart;
        for (; i < expr.length && depth > 0; i += 1) {
            const c = expr[i];
            if (c === '(') depth += 1;
            else if (c === ')') depth -= 1;
            if ((c === ',' && depth === 1) || depth === 0) {
                args.push(expr.substring(argStart, i).trim());
                argStart = i + 1;
            }
        }
        calls.push([expr.substring(match.index, i), args.filter((a) => a !== '')]);
    }
    return calls;
}

function sameNameSiblings(element) {
    return Array.from(element.parentNode.children).filter(
        (e) => e.nodeName === element.nodeName && !e.hasAttribute('template')
    );
}

/**
 * The element's path below `root` (enketo's getXPath): its own name, then its ancestors' up to
 * `root`; with `positioned`, [k] on the element if it is not the first of its name and on each
 * ancestor that has siblings of its name.
 */
function pathBelow(element, root, positioned) {
    const step = (node, repeated) => {
        const siblings = sameNameSiblings(node);
        const index = siblings.indexOf(node);
        return positioned && repeated(siblings, index)
            ? `${node.nodeName}[${index + 1}]`
            : node.nodeName;
    };
    const steps = [step(element, (siblings, index) => index > 0)];
    let parent = element.parentNode;
    while (parent && parent.nodeType === 1 && parent.nodeName !== root) {
        steps.unshift(step(parent, (siblings) => siblings.length > 1));
        parent = parent.parentNode;
    }
    return `/${steps.join('/')}`;
}

function stripQuotes(text) {
    return /^(".+"|'.+')$/.test(text) ? text.slice(1, -1) : text;
}

const LITERAL = /"([^"]*)(")|'([^']*)(')/g;

/** Absolute paths outside string literals move under the primary instance. */
function underPrimaryInstance(expr) {
    const encoded = expr.replace(
        LITERAL,
        (m, d, dq, s, sq) => (dq || sq) + encodeURIComponent(d ?? s) + (dq || sq)
    );
    // A path's first step (not `model`), at the start or after what cannot end a name or path.
    const shifted = encoded
        .replace(/^(\/(?!model\/)[^/][^/\s,"']*\/)/g, '/model/instance[1]$1')
        .replace(
            /([^a-zA-Z0-9.\])/*_-])(\/(?!model\/)[^/][^/\s,"']*\/)/g,
            '$1/model/instance[1]$2'
        );
    return shifted.replace(
        LITERAL,
        (m, d, dq, s, sq) => (dq || sq) + decodeURIComponent(d ?? s) + (dq || sq)
    );
}

class Model {
    constructor(doc, choiceLabels) {
        this.doc = doc;
        this.choiceLabels = choiceLabels;
        // enketo-core's noRepeatRefErrorExpected: forms that declare a version use relative paths.
        this.positionsRepeats = !this.doc.documentElement.hasAttributeNS(
            NAMESPACES.odk,
            'xforms-version'
        );
    }

    /** The nodes a (position-less) path selects in the primary instance. */
    collection(selector) {
        return nodes(this.doc, `/model/instance[1]${selector}`);
    }

    /** FormModel.evaluate: rewrite, then the evaluator, at the `index`-th node of `selector`. */
    evaluate(expr, resultType, selector, index) {
        const collection = this.collection(selector);
        const context = collection[index];
        if (!context) throw new Error(`no node ${selector} #${index}`);
        let rewritten = this.replaceIndexedRepeat(expr, selector, index).trim();
        rewritten = rewritten.replace(
            /instance\(\s*(["'])([A-z0-9.\-_]+)\1\s*\)/g,
            (m, q, id) => {
                const prefix = `/model/instance[@id="${id}"]`;
                if (!nodes(this.doc, prefix).length) {
                    throw new FormLogicError(`instance "${id}" does not exist in model`);
                }
                return prefix;
            }
        );
        rewritten = rewritten.replace(/current\(\)/g, pathBelow(context, 'instance', true));
        rewritten = underPrimaryInstance(rewritten);
        if (this.positionsRepeats && collection.length > 1) {
            rewritten = this.positionRepeats(rewritten, context);
        }
        rewritten = rewritten.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"');
        try {
            return evaluator.evaluate(rewritten, context, nsResolver, resultType, null);
        } catch (exc) {
            throw new FormLogicError(`Could not evaluate: ${rewritten}, message: ${exc.message}`);
        }
    }

    replaceIndexedRepeat(expr, selector, index) {
        for (const [call, params] of functionCalls(expr, 'indexed-repeat')) {
            if (params.length % 2 !== 1) {
                throw new FormLogicError(`indexed-repeat with wrong arguments: ${call}`);
            }
            let positioned = params[0];
            for (let i = params.length - 1; i > 1; i -= 2) {
                const position = Number.isNaN(Number(params[i]))
                    ? this.evaluate(params[i], window.XPathResult.NUMBER_TYPE, selector, index)
                          .numberValue
                    : params[i];
                positioned = positioned.replace(
                    params[i - 1],
                    () => `${params[i - 1]}[position() = ${position}]`
                );
            }
            expr = expr.replace(call, () => positioned);
        }
        return expr;
    }

    positionRepeats(expr, context) {
        for (let e = context; e && e.nodeType === 1; e = e.parentNode) {
            const siblings = sameNameSiblings(e);
            if (siblings.length > 1) {
                const path = pathBelow(e, 'instance', false);
                const position = siblings.indexOf(e) + 1;
                expr = expr.replace(new RegExp(`${path}/`, 'g'), () => `${path}[${position}]/`);
            }
            if (e.nodeName === 'instance') break;
        }
        return expr;
    }

    /** Form.replaceChoiceNameFn: the label of the choice in the form's language, or ''. */
    replaceChoiceName(expr, selector, index) {
        for (const [call, params] of functionCalls(expr, 'jr:choice-name')) {
            if (params.length !== 2) {
                throw new FormLogicError(`jr:choice-name with wrong arguments: ${call}`);
            }
            const value = this.evaluate(
                params[0],
                window.XPathResult.STRING_TYPE,
                selector,
                index
            ).stringValue;
            let name = stripQuotes(params[1]).trim();
            if (!name.startsWith('/')) name = `${selector}/${name}`;
            const labels = this.choiceLabels[name] || {};
            const label = value && Object.hasOwn(labels, value) ? labels[value] : '';
            expr = expr.replace(call, () => `"${label}"`);
        }
        return expr;
    }
}

function withoutPositions(path) {
    return path.replace(/\[\d+\]/g, '');
}

function evaluateCase(model, item) {
    const result = { id: item.id };
    try {
        const selector = withoutPositions(item.context);
        const context = nodes(model.doc, `/model/instance[1]${item.context}`)[0];
        if (!context) throw new Error(`no node ${item.context}`);
        const index = model.collection(selector).indexOf(context);
        let expr = item.expression;
        if (item.kind === 'calculation') {
            // Enketo's calculate.js: choice names are replaced, then the value is read as a string.
            expr = model.replaceChoiceName(expr, selector, index);
            const read = model.evaluate(expr, window.XPathResult.STRING_TYPE, selector, index);
            result.value = read.stringValue;
        } else {
            // Constraints (nodeset.js) and relevance (relevant.js) are read as booleans.
            const read = model.evaluate(expr, window.XPathResult.BOOLEAN_TYPE, selector, index);
            result.boolean = read.booleanValue;
            result.value = String(read.booleanValue);
        }
    } catch (exc) {
        result.error = `${exc.constructor.name}: ${exc.message}`;
    }
    return result;
}

function main() {
    const started = new Date();
    const out = {
        clock: {
            epoch_ms: started.getTime(),
            date: started.toString(),
            zone: Intl.DateTimeFormat().resolvedOptions().timeZone,
            offset_minutes: -started.getTimezoneOffset(),
        },
        results: [],
    };
    const version = xformsVersion(request.xform);
    out.xforms_version = version;
    for (const scenario of request.scenarios) {
        const model = new Model(
            modelDocument(scenario.instance, request.last_saved, version),
            request.choice_labels || {}
        );
        for (const item of scenario.cases) out.results.push(evaluateCase(model, item));
    }
    fs.writeFileSync(responsePath, JSON.stringify(out));
}

main();

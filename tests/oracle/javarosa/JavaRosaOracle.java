import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;

import org.javarosa.core.model.Constants;
import org.javarosa.core.model.FormDef;
import org.javarosa.core.model.condition.EvaluationContext;
import org.javarosa.core.model.data.IAnswerData;
import org.javarosa.core.model.data.StringData;
import org.javarosa.core.model.instance.InstanceInitializationFactory;
import org.javarosa.core.model.instance.TreeElement;
import org.javarosa.core.model.instance.TreeReference;
import org.javarosa.core.reference.ReferenceManager;
import org.javarosa.model.xform.XFormsModule;
import org.javarosa.xform.parse.XFormParser;
import org.javarosa.xform.util.XFormAnswerDataSerializer;
import org.javarosa.xpath.XPathConditional;
import org.javarosa.xpath.expr.XPathFuncExpr;

import java.io.File;
import java.io.IOException;
import java.io.StringReader;
import java.util.Date;
import java.util.TimeZone;

/**
 * Evaluates XLSForm expressions the way ODK Collect's engine (JavaRosa) does, for the differential
 * test in tests/oracle. One run = one clock (the caller fixes it with libfaketime).
 *
 * <p>Usage: java -cp ODK_Validate.jar:. JavaRosaOracle request.json response.json
 *
 * <p>Request: {"xform": "...", "locale": "English (en)" | null, "last_saved": "<data>..." | null,
 * "scenarios": [{"id": "...", "instance": "<data>...</data>",
 * "text_answers": [{"path": "/data/rep[2]/x", "value": "  as typed "}], "cases": [{"id": 0,
 * "kind": "constraint|relevance|calculation", "context": "/data/rep[2]/x",
 * "expression": "absolute-path XPath"}]}]}
 *
 * <p>Response: {"clock": {"epoch_ms", "date", "zone"}, "results": [{"id", "type", "value",
 * "boolean", "stored", "error"}]}: `value` is XPathFuncExpr.toString of the result, `boolean` its
 * toBoolean (constraints and relevance), `stored` what Collect would save in a string-typed
 * calculate (IAnswerData.wrapData, then the XForm serializer; "" for NaN and empty results).
 *
 * <p>Each scenario's instance is restored as Collect restores a saved instance (XFormParser with an
 * instance reader: restoreDataModel + TreeElement.populate), then the form is initialized with
 * newInstance=false. Restoring trims text, so text answers are then set again as typed (with their
 * surrounding spaces), as they were when Collect checked them at entry. Each expression is evaluated with an EvaluationContext whose context ref is the
 * case's node with its repeat multiplicities; a constraint sees its node's value as the candidate
 * value, as FormDef.evaluateConstraint does.
 */
public class JavaRosaOracle {

    public static void main(String[] args) throws Exception {
        new XFormsModule().registerModule(); // as Collect does at start: instance restore needs it
        ObjectMapper mapper = new ObjectMapper();
        JsonNode request = mapper.readTree(new File(args[0]));
        File response = new File(args[1]);

        ObjectNode out = mapper.createObjectNode();
        ObjectNode clock = out.putObject("clock");
        Date started = new Date();
        clock.put("epoch_ms", started.getTime());
        clock.put("date", started.toString());
        clock.put("zone", TimeZone.getDefault().getID());
        ArrayNode results = out.putArray("results");

        String xform = request.get("xform").asText();
        String locale = request.path("locale").isTextual() ? request.get("locale").asText() : null;
        String lastSavedSrc = null;
        if (request.path("last_saved").isTextual()) {
            File dir = response.getAbsoluteFile().getParentFile();
            java.nio.file.Files.write(
                new File(dir, "last-saved.xml").toPath(),
                request.get("last_saved").asText().getBytes("UTF-8"));
            ReferenceManager.instance().addReferenceFactory(new FileRoot(dir, "file"));
            lastSavedSrc = "jr://file/last-saved.xml";
        }

        for (JsonNode scenario : request.get("scenarios")) {
            FormDef form;
            try {
                form = load(xform, scenario.get("instance").asText(), lastSavedSrc, locale);
                for (JsonNode answer : scenario.path("text_answers")) {
                    TreeReference ref = contextRef(answer.get("path").asText());
                    form.getMainInstance().resolveReference(ref)
                        .setAnswer(new StringData(answer.get("value").asText()));
                }
            } catch (Throwable e) {
                throw new RuntimeException("scenario " + scenario.get("id").asText() + ": " + e, e);
            }
            for (JsonNode item : scenario.get("cases")) {
                results.add(evaluate(mapper, form, item));
            }
        }
        mapper.writeValue(response, out);
    }

    static FormDef load(String xform, String instance, String lastSavedSrc, String locale)
        throws Exception {
        XFormParser parser = new XFormParser(new StringReader(xform), new StringReader(instance));
        FormDef form = parser.parse(null, lastSavedSrc);
        form.initialize(false, new InstanceInitializationFactory());
        if (locale != null) {
            form.getLocalizer().setLocale(locale);
        }
        return form;
    }

    /** /data/rep[2]/x → the reference with multiplicities (0-based, as JavaRosa counts). */
    static TreeReference contextRef(String path) {
        TreeReference ref = TreeReference.rootRef();
        for (String step : path.substring(1).split("/")) {
            int bracket = step.indexOf('[');
            if (bracket < 0) {
                ref.add(step, 0);
            } else {
                int position = Integer.parseInt(step.substring(bracket + 1, step.length() - 1));
                ref.add(step.substring(0, bracket), position - 1);
            }
        }
        return ref;
    }

    static ObjectNode evaluate(ObjectMapper mapper, FormDef form, JsonNode item) {
        ObjectNode result = mapper.createObjectNode();
        result.put("id", item.get("id").asInt());
        String kind = item.get("kind").asText();
        try {
            TreeReference ref = contextRef(item.get("context").asText());
            TreeElement node = form.getMainInstance().resolveReference(ref);
            if (node == null) {
                throw new IllegalArgumentException("no node " + ref.toString(true));
            }
            EvaluationContext ec = new EvaluationContext(form.getEvaluationContext(), ref);
            if (kind.equals("constraint")) {
                ec.isConstraint = true;
                ec.candidateValue = node.getValue();
            }
            XPathConditional expression = new XPathConditional(item.get("expression").asText());
            Object raw = expression.evalRaw(form.getMainInstance(), ec);
            result.put("type", raw == null ? "null" : raw.getClass().getSimpleName());
            result.put("value", XPathFuncExpr.toString(raw));
            if (kind.equals("calculation")) {
                IAnswerData stored = IAnswerData.wrapData(raw, Constants.DATATYPE_TEXT);
                result.put("stored", stored == null
                    ? "" : String.valueOf(new XFormAnswerDataSerializer().serializeAnswerData(stored)));
            } else {
                result.put("boolean", XPathFuncExpr.toBoolean(raw));
            }
        } catch (Throwable e) {
            result.put("error", e.getClass().getSimpleName() + ": " + e.getMessage());
        }
        return result;
    }
}

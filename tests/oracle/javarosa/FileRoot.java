import org.javarosa.core.reference.PrefixedRootFactory;
import org.javarosa.core.reference.Reference;

import java.io.File;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;

/**
 * jr://ROOT/NAME → DIR/NAME, read only, for each given root: a form's media and a last-saved
 * instance, as Collect keeps them on the tablet. Shared by the oracle harnesses.
 */
final class FileRoot extends PrefixedRootFactory {
    private final File dir;

    FileRoot(File dir, String... roots) {
        super(roots);
        this.dir = dir;
    }

    @Override
    protected Reference factory(String terminal, String uri) {
        final File file = new File(dir, terminal);
        return new Reference() {
            public boolean doesBinaryExist() {
                return file.exists();
            }

            public InputStream getStream() throws IOException {
                return new FileInputStream(file);
            }

            public String getURI() {
                return uri;
            }

            public String getLocalURI() {
                return file.getAbsolutePath();
            }

            public boolean isReadOnly() {
                return true;
            }

            public OutputStream getOutputStream() throws IOException {
                throw new IOException("read only");
            }

            public void remove() throws IOException {
                throw new IOException("read only");
            }

            public Reference[] probeAlternativeReferences() {
                return new Reference[0];
            }
        };
    }
}
